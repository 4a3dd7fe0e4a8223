"""Engine, session and declarative base; the caller owns the transaction."""
from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from flask import Flask, current_app, g
from sqlalchemy import JSON, DateTime, MetaData, TypeDecorator, create_engine, event, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError
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
        return value.astimezone(UTC).replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UTCDateTime}


def utcnow() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


def make_engine(url: str) -> Engine:
    """An engine for the URL; SQLite gets foreign keys, WAL and a busy timeout."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
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
    def _idle_since(_dbapi_conn, record) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_conn, record, _proxy) -> None:
        if time.monotonic() - record.info.get("idle_since", 0.0) > PING_AFTER_IDLE_SECONDS:
            try:
                engine.dialect.do_ping(dbapi_conn)
            except engine.dialect.loaded_dbapi.Error as exc:
                raise DisconnectionError(str(exc)) from exc  # the pool replaces the connection

    return engine


def _bucket(salt: str, unit_id: str) -> float:
    from pilot.bucketing import bucket
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


def found(session: Session, model: type, message: str, **where: Any) -> Any:
    """The one row of `model` whose columns equal `where` (its primary key: `id=`), or NotFound(message):
    the one get-or-404 of the domain and the API."""
    from pilot.errors import NotFound
    row = session.get(model, where["id"]) if list(where) == ["id"] else session.scalar(
        select(model).filter_by(**where))
    if row is None:
        raise NotFound(message)
    return row


def ensure_new(session: Session, model: type, message: str, details: dict[str, Any] | None = None,
               **where: Any) -> None:
    """Conflict(message) when a row of `model` with these column values exists already."""
    from pilot.errors import Conflict
    if session.scalar(select(model.id).filter_by(**where).limit(1)) is not None:
        raise Conflict(message, details=details)
