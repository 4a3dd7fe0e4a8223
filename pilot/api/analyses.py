"""Analysis runs of a pilot: start, list, show, apply the recommendation; scheduler job history."""
import marshmallow as ma
from flask import current_app, jsonify
from flask.views import MethodView
from sqlalchemy import select

from pilot import rollout, runs
from pilot.api.base import Blueprint, PageArgs, Schema, page_schema, paginate
from pilot.auth import current
from pilot.db import db
from pilot.errors import ApiError
from pilot.models import AnalysisRun, JobRun, Pilot

blp = Blueprint("analyses", __name__, url_prefix="/pilots", description="Analysis runs and recommendations")
runs_blp = Blueprint("analysis_runs", __name__, url_prefix="/analyses", description="Analysis runs by id")
jobs_blp = Blueprint("jobs", __name__, url_prefix="/jobs", description="Scheduler job history")

DECISIONS = ("advance", "extend", "adjust", "stop", "investigate")


class AnalyseIn(Schema):
    cutoff = ma.fields.AwareDateTime(load_default=None, metadata={"description": "Data cut-off (default: now)"})
    background = ma.fields.Boolean(load_default=None, metadata={
        "description": "Run in the background and poll the run (default: when the stage has over 200,000 units)"})


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
                       "resume, rollback, complete, narrow_groups (groups), drop_arm (arm), extend (days)"})


class ApplyOut(Schema):
    run = ma.fields.Integer()
    pilot = ma.fields.String()
    applied = ma.fields.Dict()
    state = ma.fields.String()
    current_stage = ma.fields.Integer(allow_none=True)


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


class RunArgs(PageArgs):
    decision = ma.fields.String(validate=ma.validate.OneOf(DECISIONS))


def _out(run: AnalysisRun, pilot_key: str | None = None) -> AnalysisRun:
    run.pilot = pilot_key or db.session.scalar(select(Pilot.key).where(Pilot.id == run.pilot_id))
    return run


def get_run(run_id: int) -> AnalysisRun:
    run = db.session.get(AnalysisRun, run_id)
    if run is None:
        raise ApiError(404, f"No analysis run {run_id}.")
    return run


@blp.route("/<key>/analyses")
class PilotAnalyses(MethodView):
    @blp.arguments(RunArgs, location="query")
    @blp.response(200, page_schema(RunSummarySchema))
    def get(self, args, key):
        """List a pilot's analysis runs, oldest first"""
        pilot = rollout.get_pilot(db.session, key)
        stmt = select(AnalysisRun).where(AnalysisRun.pilot_id == pilot.id)
        if "decision" in args:
            stmt = stmt.where(AnalysisRun.decision == args["decision"])
        page = paginate(db.session, stmt, AnalysisRun.id, args["limit"], args["cursor"])
        page["items"] = [_out(r, key) for r in page["items"]]
        return page

    @blp.arguments(AnalyseIn)
    @blp.response(201, RunSchema)
    @blp.alt_response(202, schema=RunSummarySchema, description="Started in the background: poll the run")
    def post(self, data, key):
        """Analyse the pilot's current stage now (or in the background) and recommend"""
        pilot = rollout.get_pilot(db.session, key)
        run = runs.run_now_or_later(current_app._get_current_object(), db.session, current().actor, pilot,
                                    data["cutoff"], data["background"])
        if run.status in ("queued", "running"):
            response = jsonify(RunSummarySchema().dump(_out(run, key)))
            response.status_code = 202
            return response
        return _out(run, key)


@runs_blp.route("/<int(max=2147483647):run_id>")
class AnalysisById(MethodView):
    @runs_blp.response(200, RunSchema)
    def get(self, run_id):
        """Show an analysis run: configuration, counts, every result table, the recommendation"""
        return _out(get_run(run_id))


@runs_blp.route("/<int(max=2147483647):run_id>/apply")
class AnalysisApply(MethodView):
    @runs_blp.arguments(ApplyIn)
    @runs_blp.response(200, ApplyOut)
    def post(self, data, run_id):
        """Apply the run's recommendation (advance, pause, roll back, narrow groups…), audited"""
        out = runs.apply(db.session, current().actor, get_run(run_id), data["action"])
        db.session.commit()
        return out


@jobs_blp.route("")
class Jobs(MethodView):
    @jobs_blp.arguments(PageArgs, location="query")
    @jobs_blp.response(200, page_schema(JobSchema))
    def get(self, args):
        """Scheduler job history, oldest first"""
        return paginate(db.session, select(JobRun), JobRun.id, args["limit"], args["cursor"])
