"""Engine, session and declarative base; the caller owns the transaction."""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from flask import Flask, current_app, g
from psycopg.pq import ExecStatus
from sqlalchemy import JSON, DateTime, Executable, MetaData, TypeDecorator, create_engine, event, text
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

PING_AFTER_IDLE_SECONDS = 1.0
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every database (SQLite stores no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; Pilot stores times in UTC")
        return value.astimezone(timezone.utc).replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UTCDateTime}


def utcnow() -> datetime:
    """The current time in UTC."""
    return datetime.now(timezone.utc)


@contextmanager
def set_based_plan(conn: Connection, sorted_groups: bool = False, merge_joins: bool = False) -> Iterator[None]:
    """No nested loops on PostgreSQL for the statements inside (the settings are restored after,
    within the transaction; on an error the transaction rolls back, and the local settings with it).

    For set-based passes that read whole tables (bulk assignment, the analysis unit rows), where hash
    or merge joins are the right plan at any size: statistics taken before a large import or
    assignment (autovacuum has not caught up yet) make the planner expect one row and choose nested
    loops, a million index probes in bulk assignment and a re-aggregation per customer in the
    analysis (a minute instead of a tenth of a second for 4,000 customers).

    `sorted_groups`: GROUP BY by sorting, not hashing. For the analysis's per-customer sums, where
    each parallel worker sees nearly every customer: partial hash aggregates do not shrink, spill and
    are hashed again (10M transactions of 1M customers: 21.8 s for the statement), while sorted
    partial aggregates merge in order (14.2 s).

    `merge_joins`: join sorted inputs instead of hashing one side. For the analysis when the stage's
    units are most of the customers: the transactions are sorted by customer before the join (as
    the sorted GROUP BY needs them anyway) and merged with the assignments, instead of a random
    probe of a hash table of every unit per transaction (10M transactions, 1M units: 9.1 s for the
    statement against 10.9 s). A hash join stays better for a small pilot in a large retailer, whose
    probes drop most transactions before any sort (10,000 units: 0.7 s against 2.3 s).
    """
    if conn.dialect.name != "postgresql":
        yield
        return
    settings = {"enable_nestloop": "off", **({"enable_hashagg": "off"} if sorted_groups else {}),
                **({"enable_hashjoin": "off"} if merge_joins else {})}
    was = {name: conn.scalar(text("SELECT current_setting(:name)"), {"name": name}) for name in settings}
    for name, value in settings.items():
        conn.execute(text("SELECT set_config(:name, :value, true)"), {"name": name, "value": value})
    yield
    for name, value in was.items():
        conn.execute(text("SELECT set_config(:name, :value, true)"), {"name": name, "value": value})


class DriverStatement:
    """A Core statement compiled once for PostgreSQL and run straight on the psycopg connection:
    bind values go through the statement's types, result values through its columns' types, and
    no SQLAlchemy result objects are built.

    Only for the hot path of assignment at the till, where SQLAlchemy's per-execution work was half
    the Python time of a statement (till context: 125 us of CPU through Core, 63 us on the driver).
    The SQL stays written once, with Core; SQLite runs the same statement through SQLAlchemy."""

    def __init__(self, stmt: Executable, dialect: Dialect) -> None:
        compiled = stmt.compile(dialect=dialect)
        self.stmt, self.sql = stmt, compiled.string
        self.binds = [(name, bind.type.dialect_impl(dialect).bind_processor(dialect))
                      for name, bind in compiled.binds.items()]
        results = [(i, c.type.dialect_impl(dialect).result_processor(dialect, None))
                   for i, c in enumerate(stmt.exported_columns)]
        self.results = [(i, f) for i, f in results if f is not None]

    def run(self, dbapi_conn: Any, params: dict[str, Any]) -> list[tuple]:
        """The rows on a psycopg connection; the driver's errors propagate as they are."""
        values = {}
        for name, process in self.binds:
            value = params.get(name)
            values[name] = value if process is None or value is None else process(value)
        cursor = dbapi_conn.execute(self.sql, values, prepare=True)
        # (the result's status, not cursor.description: that builds a Column object per column)
        rows = cursor.fetchall() if cursor.pgresult.status == ExecStatus.TUPLES_OK else []
        if self.results:
            for n, row in enumerate(rows):
                row = list(row)
                for i, process in self.results:
                    row[i] = process(row[i])
                rows[n] = tuple(row)
        return rows

    def rows(self, conn: Connection, params: dict[str, Any]) -> list[tuple]:
        """The rows on a SQLAlchemy connection; a driver error is raised as SQLAlchemy would raise it."""
        dbapi_conn = conn.connection.driver_connection
        try:
            return self.run(dbapi_conn, params)
        except conn.dialect.loaded_dbapi.Error as exc:  # as SQLAlchemy would: a lost connection leaves the pool
            lost = conn.dialect.is_disconnect(exc, dbapi_conn, None)
            if lost:
                conn.invalidate(exc)
            raise DBAPIError.instance(self.sql, params, exc, conn.dialect.loaded_dbapi.Error,
                                      connection_invalidated=lost, dialect=conn.dialect) from exc


_driver_statements: dict[int, DriverStatement] = {}


def driver_statement(stmt: Executable, dialect: Dialect) -> DriverStatement:
    """The DriverStatement of a Core statement that lives for the whole process (built once, e.g.
    under functools.cache), compiled on first use."""
    prepared = _driver_statements.get(id(stmt))
    if prepared is None or prepared.stmt is not stmt:  # (an id is only unique while its object lives)
        prepared = _driver_statements[id(stmt)] = DriverStatement(stmt, dialect)
    return prepared


def driver_rows(dbapi_conn: Any, dialect: Dialect, stmt: Executable, params: dict[str, Any]) -> list[tuple]:
    """The rows of a process-long Core statement straight on a psycopg connection (DriverStatement.run)."""
    return driver_statement(stmt, dialect).run(dbapi_conn, params)


def fast_rows(conn: Connection, stmt: Executable, params: dict[str, Any]) -> list[Any]:
    """The rows of a Core statement that lives for the whole process: on the driver for PostgreSQL
    (see DriverStatement), through SQLAlchemy elsewhere. Rows are tuples in the statement's column order
    (none for a statement that returns none)."""
    if conn.dialect.name != "postgresql":
        result = conn.execute(stmt, params)
        return result.all() if result.returns_rows else []
    return driver_statement(stmt, conn.dialect).rows(conn, params)


def make_engine(url: str) -> Engine:
    """An engine for the URL; SQLite gets foreign keys, WAL and a busy timeout."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # noqa: ANN001
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()
            dbapi_conn.create_function("pilot_bucket", 2, _bucket, deterministic=True)

        return engine
    engine = create_engine(url, pool_size=5, max_overflow=10)

    # Pessimistic disconnect handling, but only for a connection that sat idle in the pool: a busy
    # service checks out connections hundreds of times a second, and a ping each time is a round trip.
    @event.listens_for(engine, "checkin")
    def _idle_since(_dbapi_conn, record) -> None:  # noqa: ANN001
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_conn, record, _proxy) -> None:  # noqa: ANN001
        if time.monotonic() - record.info.get("idle_since", 0.0) > PING_AFTER_IDLE_SECONDS:
            try:
                engine.dialect.do_ping(dbapi_conn)
            except engine.dialect.loaded_dbapi.Error as exc:
                raise DisconnectionError(str(exc)) from exc  # the pool replaces the connection

    return engine


def _bucket(salt: str, unit_id: str) -> float:
    from pilot.assignment import bucket
    return bucket(salt, unit_id)


class Database:
    """Flask extension holding one engine per app and one session per app context."""

    def init_app(self, app: Flask) -> None:
        """Bind an engine for the app's DATABASE_URL."""
        engine = make_engine(app.config["DATABASE_URL"])
        app.extensions["pilot.db"] = (engine, sessionmaker(engine, expire_on_commit=False))
        app.teardown_appcontext(self._close)

    @property
    def engine(self) -> Engine:
        return current_app.extensions["pilot.db"][0]

    @property
    def session(self) -> Session:
        """The session of the current app context, created on first use."""
        if "db_session" not in g:
            g.db_session = current_app.extensions["pilot.db"][1]()
        return g.db_session

    @staticmethod
    def _close(_exc: BaseException | None) -> None:
        session = g.pop("db_session", None)
        if session is not None:
            session.close()


db = Database()
