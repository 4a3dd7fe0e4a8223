"""Time arithmetic in SQL, written once for SQLite and PostgreSQL (times are stored in UTC)."""
from __future__ import annotations

from sqlalchemy import Date, cast, func, literal_column
from sqlalchemy.sql.elements import ColumnElement


def day(column: ColumnElement, dialect: str) -> ColumnElement:
    """The UTC calendar day of a timestamp, as an ISO date string on SQLite and a date on PostgreSQL."""
    if dialect == "postgresql":
        return cast(func.timezone("UTC", column), Date)
    return func.substr(column, 1, 10)


def epoch_seconds(column: ColumnElement, dialect: str) -> ColumnElement:
    """Seconds since 1970-01-01 UTC."""
    if dialect == "postgresql":
        return func.extract("epoch", column)
    return (func.julianday(column) - literal_column("2440587.5")) * 86400
