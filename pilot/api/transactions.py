"""Transactions: list them, ingest JSON batches and streamed CSV uploads."""
from __future__ import annotations

import json
import zlib

import marshmallow as ma
from flask import current_app, request
from flask.views import MethodView
from sqlalchemy import select

from pilot import ingestion
from pilot.api.base import Blueprint, PageArgs, Schema, page_schema, paginate
from pilot.api.bodies import batch_rows, content_encoding, request_body, request_data
from pilot.auth import current
from pilot.db import db
from pilot.errors import BadRequest, TooLarge, Unsupported
from pilot.inputs import check_depth
from pilot.models import Customer, Store, Transaction
from pilot.row_validation import csv_rows

blp = Blueprint("transactions", __name__, url_prefix="/transactions", description="Outcomes: transactions")


class IngestArgs(Schema):
    source = ma.fields.String(load_default="default", validate=ma.validate.Length(1, 64),
                              metadata={"description": "Feed name; event ids are unique per source"})
    on_error = ma.fields.String(load_default="reject_batch", validate=ma.validate.OneOf(ingestion.ON_ERROR),
                                metadata={"description": "reject_batch: one bad row and nothing is stored; "
                                                         "skip_rows: store the good rows, report the bad"})
    create_customers = ma.fields.Boolean(load_default=True,
                                         metadata={"description": "Create unknown customers by external id"})


class TransactionIn(Schema):
    event_id = ma.fields.String(required=True)
    customer = ma.fields.String(required=True, metadata={"description": "Customer external id"})
    store = ma.fields.String(required=True, metadata={"description": "Store code"})
    occurred_at = ma.fields.String(required=True, metadata={"description": "ISO 8601 with UTC offset"})
    type = ma.fields.String(metadata={"description": "sale (default) or refund (negative amount)"})
    amount = ma.fields.Raw(required=True, metadata={"description": "Decimal, up to 4 places"})
    items = ma.fields.Integer()
    discount_cost = ma.fields.Raw(metadata={"description": "Programme cost; empty: the mechanic's cost model"})
    points_issued = ma.fields.Integer()
    points_redeemed = ma.fields.Integer()
    channel = ma.fields.String(metadata={"description": ", ".join(ingestion.CHANNELS)})


class TransactionBatchSchema(Schema):
    transactions = ma.fields.List(ma.fields.Nested(TransactionIn), required=True)


class RowIssueSchema(Schema):
    row = ma.fields.Integer(allow_none=True)
    field = ma.fields.String()
    message = ma.fields.String()


class ConflictSchema(Schema):
    row = ma.fields.Integer()
    event_id = ma.fields.String()
    stored_batch_id = ma.fields.Integer()


class OutcomeSchema(Schema):
    batch_id = ma.fields.Integer()
    rows = ma.fields.Integer()
    accepted = ma.fields.Integer()
    duplicates = ma.fields.Integer()
    conflicts = ma.fields.Integer()
    rejected = ma.fields.Integer()
    customers_created = ma.fields.Integer()
    conflict_rows = ma.fields.List(ma.fields.Nested(ConflictSchema))
    errors = ma.fields.List(ma.fields.Nested(RowIssueSchema))
    timings = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Float(), metadata={
        "description": "Wall seconds: stage_seconds (reading, validating and staging the rows), write_seconds "
                       "(creating customers, inserting, comparing duplicates)"})


class TransactionSchema(Schema):
    id = ma.fields.Integer()
    source = ma.fields.String()
    event_id = ma.fields.String()
    customer = ma.fields.String()
    store = ma.fields.String()
    occurred_at = ma.fields.DateTime()
    type = ma.fields.String()
    amount = ma.fields.Float()
    items = ma.fields.Integer()
    discount_cost = ma.fields.Float(allow_none=True)
    points_issued = ma.fields.Integer()
    points_redeemed = ma.fields.Integer()
    channel = ma.fields.String()
    batch_id = ma.fields.Integer()
    received_at = ma.fields.DateTime()


class TransactionArgs(PageArgs):
    customer = ma.fields.String(metadata={"description": "Customer external id"})
    store = ma.fields.String(metadata={"description": "Store code"})
    source = ma.fields.String()


CSV_BODY = {"required": True, "content": {"text/csv": {"schema": {"type": "string", "format": "binary"}}}}


def _json_rows(limit: int, key: str = "transactions") -> list:
    """The rows under `key` of the JSON batch body (gzip allowed), checked for depth, shape and size."""
    if request.mimetype != "application/json":
        raise Unsupported(f"Send {key} as application/json (or text/csv to /{key}/upload).")
    cap = current_app.config["MAX_CONTENT_LENGTH"]
    data = request_data()  # read already (and size-checked) by the empty-body check
    if content_encoding() == "gzip":
        data = _gunzipped(data, cap)
    if len(data) > cap:
        raise TooLarge(f"The decompressed body exceeds the limit of {cap} bytes.", details={"limit_bytes": cap})
    check_depth(data)
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("Request body is not valid JSON.", code="malformed_json") from None
    return batch_rows(body, key, limit, hint=f" Split it, or upload a CSV to /api/v1/{key}/upload.")


def keyed_page(page: dict) -> dict:
    """A page of transaction or event rows with the customer's external id and the store's code."""
    ids = {row.customer_id for row in page["items"]}
    customers = dict(db.session.execute(select(Customer.id, Customer.external_id)
                                        .where(Customer.id.in_(ids))).all()) if ids else {}
    stores = dict(db.session.execute(select(Store.id, Store.code)).all())
    page["items"] = [{**{c.name: getattr(row, c.name) for c in row.__table__.columns},
                      "customer": customers[row.customer_id], "store": stores.get(row.store_id)}
                     for row in page["items"]]
    return page


def csv_upload(args: dict, rows_of, kind: ingestion.RowKind | None = None) -> dict:
    """A streamed text/csv upload through the one ingestion path; `rows_of(stream)` reads its records."""
    request.max_content_length = current_app.config["MAX_UPLOAD_BYTES"]
    if request.mimetype != "text/csv":
        raise Unsupported("Send the file as text/csv.")
    return _ingested("csv", rows_of(request_body()), args, kind)


def _gunzipped(data: bytes, cap: int) -> bytes:
    """The gzip body decompressed, up to `cap` + 1 bytes (the caller refuses more)."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, cap + 1)
    except zlib.error as exc:
        raise BadRequest(f"The body is not valid gzip: {exc}.", code="bad_encoding") from None
    if len(out) <= cap and (not inflater.eof or inflater.unused_data):
        # a gzip cut before its trailer inflates without a word; its checksum was never seen
        raise BadRequest("The body is not valid gzip: it ends early or has data after its end.",
                       code="bad_encoding")
    return out


@blp.route("")
class Transactions(MethodView):
    @blp.arguments(TransactionArgs, location="query")
    @blp.response(200, page_schema(TransactionSchema))
    def get(self, args):
        """List transactions, newest last; filter by customer, store or source"""
        stmt = select(Transaction)
        if "customer" in args:
            stmt = stmt.join(Customer, Customer.id == Transaction.customer_id) \
                .where(Customer.external_id == args["customer"])
        if "store" in args:
            stmt = stmt.join(Store, Store.id == Transaction.store_id).where(Store.code == args["store"])
        if "source" in args:
            stmt = stmt.where(Transaction.source == args["source"])
        return keyed_page(paginate(db.session, stmt, Transaction.id, args["limit"], args["cursor"]))

    @blp.arguments(IngestArgs, location="query")
    @blp.doc(requestBody={"required": True, "content": {"application/json": {"schema": TransactionBatchSchema}}},
             description="A JSON batch of up to PILOT_BATCH_ROW_LIMIT rows (default 10,000); "
                         "`Content-Encoding: gzip` is accepted. All or nothing unless on_error=skip_rows.")
    @blp.response(200, OutcomeSchema)
    def post(self, args):
        """Ingest a JSON batch of transactions (idempotent by source and event id)"""
        rows = _json_rows(current_app.config["BATCH_ROW_LIMIT"])
        return _ingested("json", enumerate(rows, start=1), args)


@blp.route("/upload")
class TransactionUpload(MethodView):
    @blp.arguments(IngestArgs, location="query")
    @blp.doc(requestBody=CSV_BODY,
             description="A CSV file, streamed (never held in memory); `Content-Encoding: gzip` is accepted. "
                         f"Columns: {', '.join(ingestion.FIELDS)}; required: {', '.join(ingestion.REQUIRED)}. "
                         "Row numbers in errors count data rows from 1 (the header is not counted).")
    @blp.response(200, OutcomeSchema)
    def post(self, args):
        """Ingest a CSV file of transactions (idempotent by source and event id)"""
        return csv_upload(args, lambda stream: csv_rows(stream, ingestion.REQUIRED, ingestion.FIELDS))


def _ingested(method: str, rows, args: dict, kind: ingestion.RowKind | None = None) -> dict:
    """Ingest the rows (transactions unless `kind` says otherwise) as one batch, committed here (the view
    owns the transaction)."""
    with ingestion.batch(db.session, current().actor, method, kind=kind, **args) as ingest:
        ingest.add_all(rows)
        out = ingest.finish()
        db.session.commit()
    return out.as_dict()
