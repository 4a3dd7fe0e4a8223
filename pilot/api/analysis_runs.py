"""Analysis runs by id: show one, apply its recommendation."""
import marshmallow as ma
from flask.views import MethodView
from sqlalchemy import select

from pilot import analysis_runs
from pilot.api.base import Blueprint, Schema
from pilot.auth import current
from pilot.db import db, found
from pilot.models import AnalysisRun, Pilot

blp = Blueprint("analysis_runs", __name__, url_prefix="/analyses", description="Analysis runs by id")


class RunSummarySchema(Schema):
    id = ma.fields.Integer()
    pilot = ma.fields.String()
    stage = ma.fields.Integer()
    status = ma.fields.String()
    decision = ma.fields.String(allow_none=True)
    requested_by = ma.fields.String()
    cutoff = ma.fields.DateTime()
    counts = ma.fields.Dict()
    timings = ma.fields.Dict()
    engine = ma.fields.String(metadata={"description": "What computed the aggregates: database (Pilot's own) or "
                                                       "spark (the data lake, PILOT_ANALYSIS_ENGINE)"})
    error = ma.fields.String(allow_none=True)
    created_at = ma.fields.DateTime()
    finished_at = ma.fields.DateTime(allow_none=True)
    applied_at = ma.fields.DateTime(allow_none=True)
    applied_by = ma.fields.String(allow_none=True)
    started_at = ma.fields.DateTime(allow_none=True, metadata={"description": "When a worker started computing it"})
    worker = ma.fields.String(allow_none=True, metadata={"description": "host:pid that runs it (or is to)"})
    lease_until = ma.fields.DateTime(allow_none=True, metadata={
        "description": "While queued or running: the worker's claim holds until then (renewed by its heartbeat); "
                       "a run whose lease lapsed lost its worker and ends failed, retried once by the scheduler"})
    heartbeat_at = ma.fields.DateTime(allow_none=True, metadata={"description": "The last renewal of the lease"})
    retry_of = ma.fields.Integer(allow_none=True, metadata={"description": "The lost run this one retries"})


class RunSchema(RunSummarySchema):
    config = ma.fields.Dict()
    recommendation = ma.fields.Dict()
    results = ma.fields.Dict()


class ApplyIn(Schema):
    action = ma.fields.Dict(load_default=None, metadata={
        "description": "Override the recommended action, e.g. {\"type\": \"pause\"}; types: advance, pause, "
                       "resume, rollback, complete, narrow_groups (groups), drop_arm (arm or drop_arms), "
                       "extend (days); advance and narrow_groups may carry drop_arms (their weights go to 0)"})


class ApplyOut(Schema):
    run = ma.fields.Integer()
    pilot = ma.fields.String()
    applied = ma.fields.Dict()
    state = ma.fields.String()
    current_stage = ma.fields.Integer(allow_none=True)


def with_pilot_key(run: AnalysisRun, pilot_key: str | None = None) -> AnalysisRun:
    """The run, carrying its pilot's key for the `pilot` field."""
    run.pilot = pilot_key or db.session.scalar(select(Pilot.key).where(Pilot.id == run.pilot_id))
    return run


def get_run(run_id: int) -> AnalysisRun:
    """The analysis run with this id, or a 404."""
    return found(db.session, AnalysisRun, f"No analysis run {run_id}.", id=run_id)


@blp.route("/<int(max=2147483647):run_id>")
class AnalysisById(MethodView):
    @blp.response(200, RunSchema)
    def get(self, run_id):
        """Show an analysis run: configuration, counts, every result table, the recommendation"""
        return with_pilot_key(get_run(run_id))


@blp.route("/<int(max=2147483647):run_id>/apply")
class AnalysisApply(MethodView):
    @blp.arguments(ApplyIn)
    @blp.response(200, ApplyOut)
    def post(self, data, run_id):
        """Apply the run's recommendation (advance, pause, roll back, narrow groups…), audited"""
        out = analysis_runs.apply(db.session, current().actor, get_run(run_id), data["action"])
        db.session.commit()
        return out
