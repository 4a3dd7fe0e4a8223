"""Project-wide defaults for flask-smorest: the Api, Blueprint and Schema we build on."""
from __future__ import annotations

import base64
import binascii

import flask_smorest
import marshmallow as ma
from sqlalchemy import Select
from sqlalchemy.orm import Session

from pilot.errors import ApiError, to_response


class Blueprint(flask_smorest.Blueprint):
    """Blueprint documenting the shared error response on every view."""

    def arguments(self, schema, *args, **kwargs):  # noqa: ANN001, ANN201
        """As flask-smorest's, but a schema class is instantiated once, not on every request (webargs
        builds a new instance, deep-copying every field, per request when given a class)."""
        return super().arguments(schema() if isinstance(schema, type) else schema, *args, **kwargs)


class Schema(ma.Schema):
    """Rejects unknown fields; keeps field order."""

    class Meta:
        unknown = ma.RAISE
        ordered = True


class ErrorBodySchema(Schema):
    status = ma.fields.Integer()
    code = ma.fields.String()
    message = ma.fields.String()
    details = ma.fields.Dict()


class ErrorSchema(Schema):
    error = ma.fields.Nested(ErrorBodySchema)


class Api(flask_smorest.Api):
    """flask-smorest Api whose errors use Pilot's error shape."""

    ERROR_SCHEMA = ErrorSchema

    def handle_http_exception(self, error):  # noqa: ANN001, ANN201
        return to_response(error)


class PageArgs(Schema):
    limit = ma.fields.Integer(load_default=50, validate=ma.validate.Range(1, 1000))
    cursor = ma.fields.String(load_default=None)


def page_schema(item: type[ma.Schema]) -> type[ma.Schema]:
    """A list-response schema: the items and the cursor of the next page."""
    return type(f"{item.__name__.removesuffix('Schema')}PageSchema", (Schema,), {
        "items": ma.fields.List(ma.fields.Nested(item)),
        "next_cursor": ma.fields.String(allow_none=True),
    })


def paginate(session: Session, stmt: Select, id_column, limit: int, cursor: str | None,  # noqa: ANN001
             key=lambda row: row.id) -> dict:  # noqa: ANN001
    """One page of stmt ordered by id_column (unique), after the cursor's value."""
    if cursor:
        stmt = stmt.where(id_column > _decode_cursor(cursor))
    rows = list(session.scalars(stmt.order_by(id_column).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = _encode_cursor(key(rows[-1])) if more else None
    return {"items": rows, "next_cursor": nxt}


def _encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(str(last_id).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        value = int(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode())
        if 0 <= value < 2**62:
            return value
    except (ValueError, binascii.Error, UnicodeDecodeError):
        pass
    raise ApiError(422, "Invalid cursor.", details={"fields": {"query": {"cursor": ["Invalid cursor."]}}})
