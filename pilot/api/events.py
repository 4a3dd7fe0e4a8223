"""Customer events: list them, ingest JSON batches and streamed CSV uploads (the transactions' one path)."""
from __future__ import annotations

import marshmallow as ma
from flask import current_app
from flask.views import MethodView
from sqlalchemy import select

from pilot import events_feed
from pilot.api.base import Blueprint, PageArgs, Schema, page_schema, paginate
from pilot.api.transactions import CSV_BODY, IngestArgs, OutcomeSchema, _ingested, _json_rows, csv_upload, keyed_page
from pilot.db import db
from pilot.models import Customer, CustomerEvent

blp = Blueprint("events", __name__, url_prefix="/events",
                description="Customer events: surveys, app sessions, referrals, complaints… (#25)")


class EventIn(Schema):
    event_id = ma.fields.String(required=True, metadata={"description": "Unique per source"})
    customer = ma.fields.String(required=True, metadata={"description": "Customer external id"})
    occurred_at = ma.fields.String(required=True, metadata={"description": "ISO 8601 with UTC offset"})
    type = ma.fields.String(required=True, metadata={"description": "survey_nps, app_session, referral, …"})
    value = ma.fields.Raw(metadata={"description": "Optional number (an NPS answer 0-10)"})
    store = ma.fields.String(metadata={"description": "Optional store code"})
    attributes = ma.fields.Dict(metadata={"description": "name: text, number or true/false (kept as text)"})


class EventBatchSchema(Schema):
    events = ma.fields.List(ma.fields.Nested(EventIn), required=True)


class EventSchema(Schema):
    id = ma.fields.Integer()
    source = ma.fields.String()
    event_id = ma.fields.String()
    customer = ma.fields.String()
    store = ma.fields.String(allow_none=True)
    occurred_at = ma.fields.DateTime()
    type = ma.fields.String()
    value = ma.fields.Float(allow_none=True)
    attributes = ma.fields.Dict()
    batch_id = ma.fields.Integer()
    received_at = ma.fields.DateTime()


class EventArgs(PageArgs):
    customer = ma.fields.String(metadata={"description": "Customer external id"})
    type = ma.fields.String()
    source = ma.fields.String()


@blp.route("")
class Events(MethodView):
    @blp.arguments(EventArgs, location="query")
    @blp.response(200, page_schema(EventSchema))
    def get(self, args):
        """List customer events, oldest first; filter by customer, type or source"""
        e = CustomerEvent
        stmt = select(e)
        if "customer" in args:
            stmt = stmt.join(Customer, Customer.id == e.customer_id).where(Customer.external_id == args["customer"])
        for name in ("type", "source"):
            if name in args:
                stmt = stmt.where(getattr(e, name) == args[name])
        return keyed_page(paginate(db.session, stmt, e.id, args["limit"], args["cursor"]))

    @blp.arguments(IngestArgs, location="query")
    @blp.doc(requestBody={"required": True, "content": {"application/json": {"schema": EventBatchSchema}}},
             description="A JSON batch of up to PILOT_BATCH_ROW_LIMIT events (default 10,000); "
                         "`Content-Encoding: gzip` is accepted. All or nothing unless on_error=skip_rows.")
    @blp.response(200, OutcomeSchema)
    def post(self, args):
        """Ingest a JSON batch of customer events (idempotent by source and event id)"""
        rows = _json_rows(current_app.config["BATCH_ROW_LIMIT"], "events")
        return _ingested("json", enumerate(rows, start=1), args, events_feed.EVENTS)


@blp.route("/upload")
class EventUpload(MethodView):
    @blp.arguments(IngestArgs, location="query")
    @blp.doc(requestBody=CSV_BODY,
             description="A CSV file, streamed (never held in memory); `Content-Encoding: gzip` is accepted. "
                         f"Columns: {', '.join(events_feed.CSV_FIELDS)} and attr.<name> for each attribute; "
                         f"required: {', '.join(events_feed.REQUIRED)}. Row numbers in errors count data rows "
                         "from 1 (the header is not counted).")
    @blp.response(200, OutcomeSchema)
    def post(self, args):
        """Ingest a CSV file of customer events (idempotent by source and event id)"""
        return csv_upload(args, events_feed.EVENTS.csv_rows, events_feed.EVENTS)
