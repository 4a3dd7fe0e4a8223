"""Data quality of the transactions feed: rows per day and per store, late events, rejected rows."""
import marshmallow as ma
from flask.views import MethodView

from pilot import data_quality as domain
from pilot.api.base import Blueprint, Schema
from pilot.api.ingestion_batches import BatchSchema
from pilot.data_quality import FIRST_DAY, LAST_DAY
from pilot.db import db

blp = Blueprint("data_quality", __name__, url_prefix="/data-quality", description="Data quality")

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


@blp.route("")
class DataQuality(MethodView):
    @blp.arguments(QualityArgs, location="query")
    @blp.response(200, QualitySchema)
    def get(self, args):
        """Rows per day and per store, last ingestion per store, late events, rejected rows per batch"""
        return domain.report(db.session, args)
