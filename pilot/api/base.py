"""Project-wide defaults for flask-smorest: the Api, Blueprint and Schema we build on, paging, and the
list, create, show, update and delete views the resources share (`get = list_view(…)` in a MethodView)."""
from __future__ import annotations

import base64
import binascii

import flask_smorest
import marshmallow as ma
from sqlalchemy import Select, select
from sqlalchemy.orm import Session
from webargs.flaskparser import FlaskParser, is_json_request

from pilot.auth import current
from pilot.db import db
from pilot.errors import Invalid
from pilot.http_errors import respond
from pilot.input_schema import NUL_MESSAGE, Schema, has_nul  # noqa: F401  (the API's schemas build on them)
from pilot.inputs import check_depth


class Parser(FlaskParser):
    """webargs' parser, with JSON bodies checked for depth first (webargs decodes them itself, not
    through the app's JSON provider)."""

    def _raw_load_json(self, req):
        if is_json_request(req):
            check_depth(req.get_data(cache=True))
        return super()._raw_load_json(req)


class Blueprint(flask_smorest.Blueprint):
    """Blueprint documenting the shared error response on every view."""

    ARGUMENTS_PARSER = Parser()

    def arguments(self, schema, *args, **kwargs):
        """As flask-smorest's, but a schema class is instantiated once, not on every request (webargs
        builds a new instance, deep-copying every field, per request when given a class)."""
        return super().arguments(schema() if isinstance(schema, type) else schema, *args, **kwargs)


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

    def handle_http_exception(self, error):
        # flask-smorest registers this for every HTTP error of the app, pages too: they get HTML
        return respond(error)


class PageArgs(Schema):
    limit = ma.fields.Integer(load_default=50, validate=ma.validate.Range(1, 1000))
    cursor = ma.fields.String(load_default=None)


def page_schema(item: type[ma.Schema]) -> type[ma.Schema]:
    """A list-response schema: the items and the cursor of the next page."""
    return type(f"{item.__name__.removesuffix('Schema')}PageSchema", (Schema,), {
        "items": ma.fields.List(ma.fields.Nested(item)),
        "next_cursor": ma.fields.String(allow_none=True),
    })


def paginate(session: Session, stmt: Select, id_column, limit: int, cursor: str | None,
             key=lambda row: row.id) -> dict:
    """One page of stmt ordered by id_column (unique), after the cursor's value."""
    if cursor:
        stmt = stmt.where(id_column > _decode_cursor(cursor))
    rows = list(session.scalars(stmt.order_by(id_column).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = _encode_cursor(key(rows[-1])) if more else None
    return {"items": rows, "next_cursor": nxt}


def list_view(blp: Blueprint, model: type, schema: type[Schema], summary: str,
              args_schema: type[Schema] = PageArgs, filters: tuple[str, ...] = (), *, parent=None, refine=None,
              by: str = "id", each=None):
    """The GET of a plain list endpoint: `model`'s rows in the order of its unique column `by`, paginated,
    with optional equality filters (query arguments of the same name as the model's columns). A MethodView's
    `get = list_view(…)`. With `parent` (find, column): only the rows whose column is the id of the row
    `find(session, key)` gives for the URL's one argument (a 404 from find). With `refine(stmt, args)`: the
    statement narrowed by the arguments that are no column's. With `each(rows)`: the page's rows prepared
    for the schema."""

    @blp.arguments(args_schema, location="query")
    @blp.response(200, page_schema(schema))
    def get(self, args, **key):
        stmt = select(model).where(*(getattr(model, name) == args[name] for name in filters if name in args))
        if refine is not None:
            stmt = refine(stmt, args)
        if parent is not None:
            find, column = parent
            stmt = stmt.where(column == find(db.session, *key.values()).id)
        page = paginate(db.session, stmt, getattr(model, by), args["limit"], args["cursor"],
                        key=lambda row: getattr(row, by))
        if each is not None:
            each(page["items"])
        return page

    get.__doc__ = summary
    return get


def create_view(blp: Blueprint, in_schema, schema, summary: str, create, secret: str | None = None):
    """The POST of a collection: the row `create(session, actor, data)` makes, committed, answered 201.
    With `secret`, create returns (row, secret), and the answer carries it (shown_once) as that field."""

    @blp.arguments(in_schema)
    @blp.response(201, schema)
    def post(self, data):
        row = create(db.session, current().actor, data)
        db.session.commit()
        return row if secret is None else shown_once(row[0], **{secret: row[1]})

    post.__doc__ = summary
    return post


def show_view(blp: Blueprint, schema, summary: str, find):
    """The GET of one row: `find(session, key)`, the key being the URL's one argument (a 404 from find)."""

    @blp.response(200, schema)
    def get(self, **key):
        return find(db.session, *key.values())

    get.__doc__ = summary
    return get


def update_view(blp: Blueprint, patch_schema, schema, summary: str, find, update):
    """The PATCH of one row: `update(session, actor, row, data)` on the row `find(session, key)` gives, committed."""

    @blp.arguments(patch_schema)
    @blp.response(200, schema)
    def patch(self, data, **key):
        row = update(db.session, current().actor, find(db.session, *key.values()), data)
        db.session.commit()
        return row

    patch.__doc__ = summary
    return patch


def delete_view(blp: Blueprint, summary: str, find, remove):
    """The DELETE of one row: `remove(session, actor, row)` on the row `find(session, key)` gives, committed, 204."""

    @blp.response(204)
    def delete(self, **key):
        remove(db.session, current().actor, find(db.session, *key.values()))
        db.session.commit()

    delete.__doc__ = summary
    return delete


def shown_once(row, **secrets):
    """The answer that carries a secret, shown only now: the row with it as a field, never cached."""
    for name, value in secrets.items():
        setattr(row, name, value)
    return row, {"Cache-Control": "no-store"}


def after_cursor(cursor: str | None) -> int:
    """The key a cursor stands for (0 without one), for lists paged by a key other than an id column."""
    return _decode_cursor(cursor) if cursor else 0


def keyset_page(rows: list, limit: int, key) -> dict:
    """A page from rows fetched with one more than `limit` (so whether another page follows is known)."""
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": rows, "next_cursor": _encode_cursor(key(rows[-1])) if more else None}


def _encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(str(last_id).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        value = int(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode())
        if 0 <= value < 2**62:
            return value
    except (ValueError, binascii.Error, UnicodeDecodeError):
        pass
    raise Invalid("Invalid cursor.", details={"fields": {"query": {"cursor": ["Invalid cursor."]}}})
