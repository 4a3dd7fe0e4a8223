"""Customers: bulk upsert by external id from JSON batches or streamed CSV."""
import marshmallow as ma
from flask import current_app, request
from flask.views import MethodView
from sqlalchemy import select

from pilot.api.base import Blueprint, Schema, list_view
from pilot.api.bodies import json_rows, request_body
from pilot.auth import current
from pilot.customers import get_customer, upsert_customers
from pilot.db import db
from pilot.errors import Unsupported
from pilot.models import Customer, Store
from pilot.row_validation import RowErrors, csv_rows, finite_json, validate_rows

blp = Blueprint("customers", __name__, url_prefix="/customers", description="Customers")

AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")


class CustomerIn(Schema):
    external_id = ma.fields.String(required=True, validate=ma.validate.Length(1, 128))
    home_store = ma.fields.String(load_default=None, allow_none=True, metadata={"description": "Store code"})
    age_band = ma.fields.String(load_default=None, allow_none=True, validate=ma.validate.OneOf(AGE_BANDS))
    household_size = ma.fields.Integer(load_default=None, allow_none=True, validate=ma.validate.Range(1, 30))
    children = ma.fields.Integer(load_default=None, allow_none=True, validate=ma.validate.Range(0, 20))
    attributes = ma.fields.Dict(keys=ma.fields.String(), load_default=dict, validate=finite_json)


class CustomerSchema(Schema):
    id = ma.fields.Integer()
    external_id = ma.fields.String()
    home_store = ma.fields.String(allow_none=True)
    age_band = ma.fields.String(allow_none=True)
    household_size = ma.fields.Integer(allow_none=True)
    children = ma.fields.Integer(allow_none=True)
    attributes = ma.fields.Dict()


class CustomerBatchSchema(Schema):
    customers = ma.fields.List(ma.fields.Dict(), required=True)


class UpsertResultSchema(Schema):
    rows = ma.fields.Integer()
    created = ma.fields.Integer()
    updated = ma.fields.Integer()


CSV_BODY = {"required": True, "content": {"text/csv": {"schema": {"type": "string"}}}}


def _with_store_code(customers):
    codes = dict(db.session.execute(select(Store.id, Store.code)).all())
    for c in customers:
        c.home_store = codes.get(c.home_store_id)
    return customers


@blp.route("")
class Customers(MethodView):
    get = list_view(blp, Customer, CustomerSchema, "List customers", each=_with_store_code)

    @blp.doc(requestBody={"required": True, "content": {"application/json": {"schema": CustomerBatchSchema}}})
    @blp.response(200, UpsertResultSchema)
    def post(self):
        """Upsert a JSON batch of customers by external id (all or nothing)"""
        raw = enumerate(json_rows("customers", current_app.config["BATCH_ROW_LIMIT"]), start=1)
        return _upsert(raw)


@blp.route("/import")
class CustomerImport(MethodView):
    @blp.doc(requestBody=CSV_BODY)
    @blp.response(200, UpsertResultSchema)
    def post(self):
        """Upsert customers from a streamed CSV; other columns become attributes"""
        if request.mimetype != "text/csv":
            raise Unsupported("Send customers as text/csv.")
        return _upsert(csv_rows(request_body(gzipped=False), ("external_id",), CustomerIn().fields,
                                extra_into="attributes"))


def _upsert(raw):
    errors = RowErrors()
    counts = upsert_customers(db.session, current().actor, validate_rows(raw, CustomerIn(), "external_id", errors),
                              errors)
    db.session.commit()
    return counts


@blp.route("/<external_id>")
class CustomerByExternalId(MethodView):
    @blp.response(200, CustomerSchema)
    def get(self, external_id):
        """Show a customer"""
        return _with_store_code([get_customer(db.session, external_id)])[0]
