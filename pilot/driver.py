"""Statements straight on the psycopg connection, for the hot path of assignment at the till."""
from __future__ import annotations

from typing import Any

from psycopg.pq import ExecStatus
from sqlalchemy import Executable
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError


class DriverStatement:
    """A Core statement compiled once for PostgreSQL and run straight on the psycopg connection:
    bind values go through the statement's types, result values through its columns' types, and
    no SQLAlchemy result objects are built.

    Only for the hot path of assignment at the till, where SQLAlchemy's per-execution work is a large
    part of a statement's Python time (measured in docs/architecture.md, "The assignment fast path").
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
