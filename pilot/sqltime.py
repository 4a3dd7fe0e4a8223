"""Time arithmetic in SQL, written once for SQLite and PostgreSQL (times are stored in UTC)."""
from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Date, DateTime, cast, func, literal, literal_column
from sqlalchemy.sql.elements import ColumnElement


def day(column: ColumnElement, dialect: str) -> ColumnElement:
    """The UTC calendar day of a timestamp, as an ISO date string on SQLite and a date on PostgreSQL."""
    if dialect == "postgresql":
        return cast(func.timezone("UTC", column), Date)
    return func.substr(column, 1, 10)


def epoch_seconds(column: ColumnElement, dialect: str) -> ColumnElement:
    """Seconds since 1970-01-01 UTC, as a float (PostgreSQL's date_part; EXTRACT would give a slower numeric)."""
    if dialect == "postgresql":
        return func.date_part("epoch", column)
    return (func.julianday(column) - literal_column("2440587.5")) * 86400


def at_least_after(later: ColumnElement, earlier: ColumnElement, seconds: int, dialect: str) -> ColumnElement:
    """later >= earlier + seconds. On PostgreSQL a plain timestamp comparison (the interval has no day
    part, so no time-zone arithmetic per row); on SQLite through julianday."""
    if dialect == "postgresql":
        return later >= earlier + literal_column(f"INTERVAL '{int(seconds)} seconds'")
    return (func.julianday(later) - func.julianday(earlier)) * 86400 >= seconds


def sqlite_text(moment: datetime) -> str:
    """The text SQLAlchemy's SQLite DateTime stores for a time (in UTC)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def time_value(moment: datetime, dialect: str) -> datetime | str:
    """A time as a raw-SQL parameter: as is on PostgreSQL, as stored text on SQLite."""
    return moment if dialect == "postgresql" else sqlite_text(moment)


def time_literal(moment: datetime, dialect: str) -> ColumnElement:
    """A time as an expression that sqltime's functions accept on either database (typed on
    PostgreSQL, so it stays unambiguous where the statement is rendered with its values inline)."""
    if dialect == "postgresql":
        return cast(literal(moment), DateTime(timezone=True))
    return literal(time_value(moment, dialect))
