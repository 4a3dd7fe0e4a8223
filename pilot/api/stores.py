"""Stores: CRUD and bulk import (JSON or CSV), upsert by code, all-or-nothing."""
import marshmallow as ma
from flask import current_app, request
from flask.views import MethodView
from sqlalchemy import Select

from pilot import stores
from pilot.api.base import Blueprint, PageArgs, Schema, create_view, delete_view, list_view
from pilot.api.bodies import json_rows, request_body
from pilot.api.regions import CODE
from pilot.auth import current, require_store_scope
from pilot.db import db
from pilot.errors import Invalid, Unsupported
from pilot.models import Region, Store
from pilot.rollout import store_status
from pilot.row_validation import RowErrors, csv_rows, finite_json, validate_rows

blp = Blueprint("stores", __name__, url_prefix="/stores", description="Stores")


class StoreIn(Schema):
    code = ma.fields.String(required=True, validate=CODE)
    name = ma.fields.String(required=True, validate=ma.validate.Length(1, 200))
    region = ma.fields.String(required=True, metadata={"description": "Region code"})
    format = ma.fields.String(load_default=None, allow_none=True, validate=ma.validate.Length(max=64))
    size_sqm = ma.fields.Float(load_default=None, allow_none=True, validate=ma.validate.Range(min=0))
    opening_date = ma.fields.Date(load_default=None, allow_none=True)
    attributes = ma.fields.Dict(keys=ma.fields.String(), load_default=dict, validate=finite_json)


class StoreSchema(Schema):
    id = ma.fields.Integer()
    code = ma.fields.String()
    name = ma.fields.String()
    region = ma.fields.Function(lambda s: s.region.code)
    format = ma.fields.String(allow_none=True)
    size_sqm = ma.fields.Float(allow_none=True)
    opening_date = ma.fields.Date(allow_none=True)
    attributes = ma.fields.Dict()


class StoreListArgs(PageArgs):
    region = ma.fields.String(metadata={"description": "Only stores of this region code"})


class ImportResultSchema(Schema):
    rows = ma.fields.Integer()
    created = ma.fields.Integer()
    updated = ma.fields.Integer()
    unchanged = ma.fields.Integer()


CSV_BODY = {"required": True, "content": {
    "text/csv": {"schema": {"type": "string"}},
    "application/json": {"schema": {"type": "object", "properties": {"stores": {"type": "array", "items": {}}}}},
}}


def _in_region(stmt: Select, args: dict) -> Select:
    """The stores of the region whose code is `region`, where given."""
    return stmt.join(Region).where(Region.code == args["region"]) if "region" in args else stmt


@blp.route("")
class Stores(MethodView):
    get = list_view(blp, Store, StoreSchema, "List stores", StoreListArgs, refine=_in_region)

    post = create_view(blp, StoreIn, StoreSchema, "Create a store", stores.create_store)


@blp.route("/import")
class StoreImport(MethodView):
    @blp.doc(requestBody=CSV_BODY)
    @blp.response(200, ImportResultSchema)
    def post(self):
        """Import stores from CSV or JSON (upsert by code, all or nothing)"""
        errors = RowErrors()
        if request.mimetype == "text/csv":
            fields = StoreIn().fields
            raw = list(csv_rows(request_body(gzipped=False), ("code", "name", "region"), fields,
                                extra_into="attributes"))
        elif request.is_json:
            raw = list(enumerate(json_rows("stores", current_app.config["BATCH_ROW_LIMIT"]), start=1))
        else:
            raise Unsupported("Send stores as text/csv or application/json.")
        rows = list(validate_rows(raw, StoreIn(), "code", errors))
        errors.raise_if_any(len(raw))
        counts = stores.upsert_stores(db.session, current().actor, rows, errors)
        errors.raise_if_any(len(raw))
        db.session.commit()
        return {"rows": len(raw), **counts}


@blp.route("/<code>")
class StoreByCode(MethodView):
    @blp.response(200, StoreSchema)
    def get(self, code):
        """Show a store (a store token: its own only)"""
        require_store_scope(code)
        return stores.get_store(db.session, code)

    @blp.arguments(StoreIn(partial=True))
    @blp.response(200, StoreSchema)
    def patch(self, data, code):
        """Change a store"""
        if "code" in data and data["code"] != code:
            raise Invalid("A store's code cannot change.", details={"fields": {"code": ["Read-only."]}})
        store = stores.update_store(db.session, current().actor, stores.get_store(db.session, code), data)
        db.session.commit()
        return store

    delete = delete_view(blp, "Delete a store", stores.get_store, stores.delete_store)


class TillSchema(Schema):
    variant = ma.fields.String()
    name = ma.fields.String()
    share = ma.fields.Float()
    description = ma.fields.String()


class StorePilotSchema(Schema):
    pilot = ma.fields.String()
    pilot_name = ma.fields.String()
    programme = ma.fields.String()
    state = ma.fields.String()
    unit = ma.fields.String()
    stage = ma.fields.Integer()
    stage_name = ma.fields.String()
    role = ma.fields.String(metadata={"description": "treatment or control (store pilots), customer_randomised"})
    arm = ma.fields.String(allow_none=True)
    since = ma.fields.DateTime()
    planned_end = ma.fields.Date(allow_none=True)
    eligible_groups = ma.fields.List(ma.fields.String(), allow_none=True)
    at_the_till = ma.fields.List(ma.fields.Nested(TillSchema))


class StoreStatusSchema(Schema):
    store = ma.fields.String()
    name = ma.fields.String()
    enrolled = ma.fields.Boolean()
    pilots = ma.fields.List(ma.fields.Nested(StorePilotSchema))


@blp.route("/<code>/status")
class StoreStatus(MethodView):
    @blp.response(200, StoreStatusSchema)
    def get(self, code):
        """The pilots a store is in, since when, and what that means at the till"""
        require_store_scope(code)
        store = stores.get_store(db.session, code)
        pilots = store_status(db.session, store)
        return {"store": store.code, "name": store.name, "enrolled": bool(pilots), "pilots": pilots}
