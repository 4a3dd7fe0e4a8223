"""Transactions: JSON batches, streamed CSV uploads, ingestion batches and data quality."""
from __future__ import annotations

import json
import zlib
from datetime import date, datetime, timedelta, timezone

import marshmallow as ma
from flask import current_app, request
from flask.views import MethodView
from sqlalchemy import Integer, cast, func, select

from pilot import ingest
from pilot.api.base import Blueprint, PageArgs, Schema, page_schema, paginate
from pilot.auth import current
from pilot.batches import batch_rows, csv_rows
from pilot.bodies import content_encoding, request_body, request_data
from pilot.db import db
from pilot.errors import ApiError
from pilot.inputs import check_depth
from pilot.models import Customer, IngestionBatch, Store, Transaction
from pilot.sqltime import day, epoch_seconds

blp = Blueprint("transactions", __name__, url_prefix="/transactions", description="Outcomes: transactions")
batches_blp = Blueprint("ingestion_batches", __name__, url_prefix="/ingestion-batches",
                        description="Ingestion batches and what became of their rows")
quality_blp = Blueprint("data_quality", __name__, url_prefix="/data-quality", description="Data quality")


class IngestArgs(Schema):
    source = ma.fields.String(load_default="default", validate=ma.validate.Length(1, 64),
                              metadata={"description": "Feed name; event ids are unique per source"})
    on_error = ma.fields.String(load_default="reject_batch", validate=ma.validate.OneOf(ingest.ON_ERROR),
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
    channel = ma.fields.String(metadata={"description": ", ".join(ingest.CHANNELS)})


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


class BatchSchema(Schema):
    id = ma.fields.Integer()
    source = ma.fields.String()
    actor = ma.fields.String()
    method = ma.fields.String()
    on_error = ma.fields.String()
    status = ma.fields.String()
    rows = ma.fields.Integer()
    accepted = ma.fields.Integer()
    duplicates = ma.fields.Integer()
    conflicts = ma.fields.Integer()
    rejected = ma.fields.Integer()
    customers_created = ma.fields.Integer()
    errors = ma.fields.List(ma.fields.Dict())
    started_at = ma.fields.DateTime()
    heartbeat_at = ma.fields.DateTime(allow_none=True, metadata={
        "description": "While running: when the batch last said it was alive"})
    finished_at = ma.fields.DateTime(allow_none=True)


class BatchArgs(PageArgs):
    status = ma.fields.String(validate=ma.validate.OneOf(("running", "accepted", "rejected", "failed")))


CSV_BODY = {"required": True, "content": {"text/csv": {"schema": {"type": "string", "format": "binary"}}}}


def _json_rows(limit: int) -> list:
    if request.mimetype != "application/json":
        raise ApiError(415, "Send transactions as application/json (or text/csv to /transactions/upload).")
    cap = current_app.config["MAX_CONTENT_LENGTH"]
    data = request_data()  # read already (and size-checked) by the empty-body check
    if content_encoding() == "gzip":
        data = _gunzipped(data, cap)
    if len(data) > cap:
        raise ApiError(413, f"The decompressed body exceeds the limit of {cap} bytes.", details={"limit_bytes": cap})
    check_depth(data)
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "Request body is not valid JSON.", code="malformed_json") from None
    return batch_rows(body, "transactions", limit,
                      hint=" Split it, or upload a CSV to /api/v1/transactions/upload.")


def _gunzipped(data: bytes, cap: int) -> bytes:
    """The gzip body decompressed, up to `cap` + 1 bytes (the caller refuses more)."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, cap + 1)
    except zlib.error as exc:
        raise ApiError(400, f"The body is not valid gzip: {exc}.", code="bad_encoding") from None
    if len(out) <= cap and (not inflater.eof or inflater.unused_data):
        # a gzip cut before its trailer inflates without a word; its checksum was never seen
        raise ApiError(400, "The body is not valid gzip: it ends early or has data after its end.",
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
        page = paginate(db.session, stmt, Transaction.id, args["limit"], args["cursor"])
        ids = {t.customer_id for t in page["items"]}
        customers = dict(db.session.execute(select(Customer.id, Customer.external_id)
                                            .where(Customer.id.in_(ids))).all()) if ids else {}
        stores = dict(db.session.execute(select(Store.id, Store.code)).all())
        page["items"] = [{**{c.name: getattr(t, c.name) for c in Transaction.__table__.columns},
                          "customer": customers[t.customer_id], "store": stores[t.store_id]} for t in page["items"]]
        return page

    @blp.arguments(IngestArgs, location="query")
    @blp.doc(requestBody={"required": True, "content": {"application/json": {"schema": TransactionBatchSchema}}},
             description="A JSON batch of up to PILOT_BATCH_ROW_LIMIT rows (default 10,000); "
                         "`Content-Encoding: gzip` is accepted. All or nothing unless on_error=skip_rows.")
    @blp.response(200, OutcomeSchema)
    def post(self, args):
        """Ingest a JSON batch of transactions (idempotent by source and event id)"""
        rows = _json_rows(current_app.config["BATCH_ROW_LIMIT"])
        return ingest.run(db.session, current().actor, "json", enumerate(rows, start=1), **args).as_dict()


@blp.route("/upload")
class TransactionUpload(MethodView):
    @blp.arguments(IngestArgs, location="query")
    @blp.doc(requestBody=CSV_BODY,
             description="A CSV file, streamed (never held in memory); `Content-Encoding: gzip` is accepted. "
                         f"Columns: {', '.join(ingest.FIELDS)}; required: {', '.join(ingest.REQUIRED)}. "
                         "Row numbers in errors count data rows from 1 (the header is not counted).")
    @blp.response(200, OutcomeSchema)
    def post(self, args):
        """Ingest a CSV file of transactions (idempotent by source and event id)"""
        request.max_content_length = current_app.config["MAX_UPLOAD_BYTES"]
        if request.mimetype != "text/csv":
            raise ApiError(415, "Send the file as text/csv.")
        rows = csv_rows(request_body(), ingest.REQUIRED, ingest.FIELDS)
        return ingest.run(db.session, current().actor, "csv", rows, **args).as_dict()


@batches_blp.route("")
class IngestionBatches(MethodView):
    @batches_blp.arguments(BatchArgs, location="query")
    @batches_blp.response(200, page_schema(BatchSchema))
    def get(self, args):
        """List ingestion batches, oldest first"""
        stmt = select(IngestionBatch)
        if "status" in args:
            stmt = stmt.where(IngestionBatch.status == args["status"])
        return paginate(db.session, stmt, IngestionBatch.id, args["limit"], args["cursor"])


@batches_blp.route("/<int(max=2147483647):batch_id>")
class IngestionBatchById(MethodView):
    @batches_blp.response(200, BatchSchema)
    def get(self, batch_id):
        """Show an ingestion batch with its rejected rows"""
        batch = db.session.get(IngestionBatch, batch_id)
        if batch is None:
            raise ApiError(404, f"No ingestion batch {batch_id}.")
        return batch


# The window's days, so that its bounds (a day after `to`, 29 days before it) are dates too.
FIRST_DAY, LAST_DAY = date(1900, 1, 1), date(9999, 12, 30)
QUALITY_DAYS = ma.validate.Range(FIRST_DAY, LAST_DAY, error=f"A day from {FIRST_DAY} to {LAST_DAY}.")


class QualityArgs(Schema):
    start = ma.fields.Date(data_key="from", validate=QUALITY_DAYS,
                           metadata={"description": "First day (UTC); default: the 30 days up to `to`"})
    end = ma.fields.Date(data_key="to", validate=QUALITY_DAYS,
                         metadata={"description": "Last day (UTC); default today"})
    store = ma.fields.String(metadata={"description": "Only this store"})
    late_hours = ma.fields.Integer(load_default=24, validate=ma.validate.Range(1, 24 * 90),
                                   metadata={"description": "An event is late when received this many hours "
                                                            "after it happened"})


class DayQualitySchema(Schema):
    date = ma.fields.String()
    rows = ma.fields.Integer()
    amount = ma.fields.Float()
    late = ma.fields.Integer()


class StoreQualitySchema(Schema):
    store = ma.fields.String()
    rows = ma.fields.Integer()
    days_with_data = ma.fields.Integer()
    last_event_at = ma.fields.DateTime(allow_none=True)
    last_received_at = ma.fields.DateTime(allow_none=True)


class QualitySchema(Schema):
    window = ma.fields.Dict()
    late_hours = ma.fields.Integer()
    rows = ma.fields.Integer()
    late = ma.fields.Integer()
    per_day = ma.fields.List(ma.fields.Nested(DayQualitySchema))
    per_store = ma.fields.List(ma.fields.Nested(StoreQualitySchema))
    batches = ma.fields.List(ma.fields.Nested(BatchSchema))
    rejected_rows = ma.fields.Integer()
    failed_batches = ma.fields.Integer()


@quality_blp.route("")
class DataQuality(MethodView):
    @quality_blp.arguments(QualityArgs, location="query")
    @quality_blp.response(200, QualitySchema)
    def get(self, args):
        """Rows per day and per store, last ingestion per store, late events, rejected rows per batch"""
        return data_quality(args)


def data_quality(args: dict) -> dict:
    """The data-quality report for a window of days."""
    end = args.get("end") or datetime.now(timezone.utc).date()
    start = args.get("start") or max(end - timedelta(days=29), FIRST_DAY)
    if start > end:
        raise ApiError(422, "'from' is after 'to'.", details={"fields": {"query": {"from": ["After 'to'."]}}})
    if (end - start).days > 3660:
        raise ApiError(422, "The window is at most ten years.", details={"fields": {"query": {"from": ["Too early."]}}})
    session, dialect = db.session, db.engine.dialect.name
    lo = datetime.combine(start, datetime.min.time(), timezone.utc)
    hi = datetime.combine(end + timedelta(days=1), datetime.min.time(), timezone.utc)
    t = Transaction
    where = [t.occurred_at >= lo, t.occurred_at < hi]
    only = []
    if "store" in args:
        store_id = session.scalar(select(Store.id).where(Store.code == args["store"]))
        if store_id is None:
            raise ApiError(404, f"No store {args['store']!r}.")
        where.append(t.store_id == store_id)
        only.append(Store.id == store_id)
    late_expr = func.sum(cast(epoch_seconds(t.received_at, dialect) - epoch_seconds(t.occurred_at, dialect)
                              > args["late_hours"] * 3600, Integer))
    d = day(t.occurred_at, dialect).label("d")
    per_day = [{"date": str(r.d), "rows": r.n, "amount": float(r.amount or 0), "late": int(r.late or 0)}
               for r in session.execute(select(d, func.count().label("n"), func.sum(t.amount).label("amount"),
                                               late_expr.label("late")).where(*where).group_by(d).order_by(d))]
    days = day(t.occurred_at, dialect)
    stats = {r.store_id: r for r in session.execute(
        select(t.store_id, func.count().label("n"), func.count(days.distinct()).label("days"),
               func.max(t.occurred_at).label("last_event"), func.max(t.received_at).label("last_received"))
        .where(*where).group_by(t.store_id))}
    stores = session.execute(select(Store.id, Store.code).where(*only).order_by(Store.code)).all()
    per_store = [{"store": code, "rows": stats[sid].n if sid in stats else 0,
                  "days_with_data": stats[sid].days if sid in stats else 0,
                  "last_event_at": _utc(stats[sid].last_event) if sid in stats else None,
                  "last_received_at": _utc(stats[sid].last_received) if sid in stats else None}
                 for sid, code in stores]
    b = IngestionBatch
    in_window = [b.started_at >= lo, b.started_at < hi]
    batches = list(session.scalars(select(b).where(*in_window).order_by(b.id.desc()).limit(50)))
    rejected, failed = session.execute(select(func.coalesce(func.sum(b.rejected), 0),
                                              func.count().filter(b.status.in_(("rejected", "failed"))))
                                       .where(*in_window)).one()
    return {"window": {"from": start.isoformat(), "to": end.isoformat()}, "late_hours": args["late_hours"],
            "rows": sum(r["rows"] for r in per_day), "late": sum(r["late"] for r in per_day),
            "per_day": per_day, "per_store": per_store, "batches": batches,
            "rejected_rows": int(rejected), "failed_batches": int(failed)}


def _utc(value: datetime | str | None) -> datetime | None:
    """max() over a timestamp comes back as text on SQLite."""
    if value is None or isinstance(value, datetime):
        return value if value is None or value.tzinfo else value.replace(tzinfo=timezone.utc)
    return datetime.fromisoformat(value).replace(tzinfo=timezone.utc)

