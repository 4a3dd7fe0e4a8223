"""Ingestion batches: each JSON batch or CSV upload of transactions, and what became of its rows."""
import marshmallow as ma
from flask.views import MethodView

from pilot.api.base import Blueprint, PageArgs, Schema, list_view
from pilot.db import db, found
from pilot.models import IngestionBatch

blp = Blueprint("ingestion_batches", __name__, url_prefix="/ingestion-batches",
                description="Ingestion batches and what became of their rows")


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


@blp.route("")
class IngestionBatches(MethodView):
    get = list_view(blp, IngestionBatch, BatchSchema, "List ingestion batches, oldest first", BatchArgs, ("status",))


@blp.route("/<int(max=2147483647):batch_id>")
class IngestionBatchById(MethodView):
    @blp.response(200, BatchSchema)
    def get(self, batch_id):
        """Show an ingestion batch with its rejected rows"""
        return found(db.session, IngestionBatch, f"No ingestion batch {batch_id}.", id=batch_id)
