"""A pilot's analysis runs: list them, start one (now or in the background)."""
import marshmallow as ma
from flask import current_app, jsonify
from flask.views import MethodView
from sqlalchemy import select

from pilot import analysis_runs, rollout
from pilot.api.analysis_runs import RunSchema, RunSummarySchema, with_pilot_key
from pilot.api.base import Blueprint, PageArgs, Schema, page_schema, paginate
from pilot.auth import current
from pilot.db import db
from pilot.models import AnalysisRun

blp = Blueprint("analyses", __name__, url_prefix="/pilots", description="Analysis runs and recommendations")

DECISIONS = ("advance", "extend", "adjust", "stop", "investigate")


class AnalyseIn(Schema):
    cutoff = ma.fields.AwareDateTime(load_default=None, metadata={"description": "Data cut-off (default: now)"})
    background = ma.fields.Boolean(load_default=None, metadata={
        "description": "Run in the background and poll the run (default: when the stage has over 200,000 units)"})


class RunArgs(PageArgs):
    decision = ma.fields.String(validate=ma.validate.OneOf(DECISIONS))


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
        page["items"] = [with_pilot_key(r, key) for r in page["items"]]
        return page

    @blp.arguments(AnalyseIn)
    @blp.response(201, RunSchema)
    @blp.alt_response(202, schema=RunSummarySchema, description="Started in the background: poll the run")
    def post(self, data, key):
        """Analyse the pilot's current stage now (or in the background) and recommend"""
        pilot = rollout.get_pilot(db.session, key)
        run = analysis_runs.request_run(db.session, current().actor, pilot, data["cutoff"], data["background"])
        db.session.commit()
        run = analysis_runs.launch(current_app._get_current_object(), db.session, run)
        if run.status in ("queued", "running"):
            response = jsonify(RunSummarySchema().dump(with_pilot_key(run, key)))
            response.status_code = 202
            return response
        return with_pilot_key(run, key)
