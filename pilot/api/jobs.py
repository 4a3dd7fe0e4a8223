"""Scheduler job history."""
import marshmallow as ma
from flask.views import MethodView

from pilot.api.base import Blueprint, Schema, list_view
from pilot.models import JobRun

blp = Blueprint("jobs", __name__, url_prefix="/jobs", description="Scheduler job history")


class JobSchema(Schema):
    id = ma.fields.Integer()
    job = ma.fields.String()
    slot = ma.fields.String()
    status = ma.fields.String()
    worker = ma.fields.String()
    detail = ma.fields.Dict()
    started_at = ma.fields.DateTime()
    finished_at = ma.fields.DateTime(allow_none=True)
    lease_until = ma.fields.DateTime(allow_none=True, metadata={
        "description": "While running: the claim holds until then (renewed by a heartbeat); after it, another "
                       "scheduler takes the slot over (detail.taken_over lists the lost attempts)"})
    heartbeat_at = ma.fields.DateTime(allow_none=True, metadata={"description": "The last renewal of the lease"})


@blp.route("")
class Jobs(MethodView):
    get = list_view(blp, JobRun, JobSchema, "Scheduler job history, oldest first")
