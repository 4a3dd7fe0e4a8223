"""Pilots: configuration, stages, lifecycle actions, enrolments, balance and timeline; imported pilots."""
import json

import marshmallow as ma
from flask import current_app, make_response, request
from flask.views import MethodView
from sqlalchemy import or_, select

from pilot import bulk_jobs, governance, pilot_drafts, pilot_import, rollout
from pilot.api.approvals import ApprovalSchema
from pilot.api.base import Blueprint, PageArgs, Schema, page_schema, paginate
from pilot.api.bodies import json_body, request_data
from pilot.auth import MANAGERS, current
from pilot.db import db
from pilot.errors import BadRequest, Conflict, Invalid
from pilot.models import AuditEvent, Enrolment, Pilot
from pilot.models.pilots import STATES
from pilot.pilot_schemas import CODE, METRIC, GateSchema, GuardrailSchema, PilotIn, StageIn  # noqa: F401  (the domain's, for pages too)
from pilot.programmes import get_programme
from pilot.row_validation import csv_rows
from pilot.store_randomisation import balance, pre_period_values

blp = Blueprint("pilots", __name__, url_prefix="/pilots", description="Pilots, stages and their lifecycle")



class PilotPatch(Schema):
    name = ma.fields.String(validate=ma.validate.Length(1, 200))
    unit = ma.fields.String(validate=ma.validate.OneOf(["customer", "store"]))
    primary_metric = ma.fields.String(validate=METRIC)
    guardrails = ma.fields.List(ma.fields.Nested(GuardrailSchema))
    alpha = ma.fields.Float(validate=ma.validate.Range(0.001, 0.5))
    power = ma.fields.Float(validate=ma.validate.Range(0.5, 0.999))
    mde = ma.fields.Float(validate=ma.validate.Range(0.0001, 10))
    margin_rate = ma.fields.Float(validate=ma.validate.Range(0.001, 1))
    layer = ma.fields.String(validate=CODE)
    salt = ma.fields.String(validate=ma.validate.Length(1, 64))
    approval = ma.fields.String(validate=ma.validate.OneOf(["none", "second_person"]))
    independent_of = ma.fields.List(ma.fields.String(validate=CODE), validate=ma.validate.Length(0, 50))
    stages = ma.fields.List(ma.fields.Nested(StageIn), validate=ma.validate.Length(1, 20), metadata={
        "description": "A draft's stages, replacing its list (a stage left out is removed, a variant left out of "
                       "an allocation is no longer in that stage); a started pilot's stages change one at a "
                       "time (PATCH /pilots/{key}/stages/{position})"})


class StageSchema(Schema):
    position = ma.fields.Integer()
    name = ma.fields.String()
    store_codes = ma.fields.List(ma.fields.String())
    region_codes = ma.fields.List(ma.fields.String())
    allocation = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Float())
    allocation_log = ma.fields.List(ma.fields.Dict(), metadata={
        "description": "The weights the running stage had before each change, with the time they ended"})
    eligible_groups = ma.fields.List(ma.fields.String(), allow_none=True)
    planned_start = ma.fields.Date(allow_none=True)
    planned_end = ma.fields.Date(allow_none=True)
    gate = ma.fields.Dict()
    started_at = ma.fields.DateTime(allow_none=True)
    ended_at = ma.fields.DateTime(allow_none=True)


class PilotSchema(Schema):
    id = ma.fields.Integer()
    key = ma.fields.String()
    name = ma.fields.String()
    programme = ma.fields.Function(lambda p: p.programme.key)
    unit = ma.fields.String()
    primary_metric = ma.fields.String()
    guardrails = ma.fields.List(ma.fields.Dict())
    alpha = ma.fields.Float()
    power = ma.fields.Float()
    mde = ma.fields.Float()
    margin_rate = ma.fields.Float()
    layer = ma.fields.String()
    salt = ma.fields.Method("_salt", metadata={
        "description": "The bucketing salt (admins and managers only; the field is absent for other roles)"})
    state = ma.fields.String()
    imported_at = ma.fields.DateTime(allow_none=True, metadata={
        "description": "When a pilot that ran elsewhere was imported (POST /pilots/import); null for a live one"})
    current_stage = ma.fields.Integer(allow_none=True)
    started_at = ma.fields.DateTime(allow_none=True)
    ended_at = ma.fields.DateTime(allow_none=True)
    stages = ma.fields.List(ma.fields.Nested(StageSchema))
    approval = ma.fields.String(metadata={"description": "none, or second_person: overrides, advances against "
                                          "the recommendation and roll backs wait for another person's approval"})
    independent_of = ma.fields.List(ma.fields.String(), metadata={
        "description": "Pilots declared independent: their overlap with this one is allowed (audited)"})
    plan_version = ma.fields.Integer(allow_none=True, metadata={
        "description": "The analysis plan's version (1 once started; each amendment adds one)"})

    def _salt(self, pilot: Pilot):
        return pilot.salt if current().role in MANAGERS else ma.missing


class PilotListArgs(PageArgs):
    state = ma.fields.String(validate=ma.validate.OneOf(STATES))


class ActionIn(Schema):
    reason = ma.fields.String(load_default=None, validate=ma.validate.Length(1, 500))
    override = ma.fields.Boolean(load_default=False, metadata={
        "description": "Advance or complete although the gate is not met (needs a reason; audited)"})
    assign = ma.fields.Boolean(load_default=True, metadata={
        "description": "On start or advance of a customer pilot: assign the eligible customers of the (newly "
                       "enrolled) scope in the background, as the pages do (the default; false opts out); "
                       "progress at GET /api/v1/pilots/{key}/assignments/progress. A store pilot has nothing "
                       "to assign in bulk"})


class EnrolmentSchema(Schema):
    store = ma.fields.Function(lambda e: e.store.code)
    region = ma.fields.Function(lambda e: e.store.region.code)
    stage = ma.fields.Function(lambda e: e.stage.position)
    arm = ma.fields.String(allow_none=True)
    enrolled_at = ma.fields.DateTime()
    withdrawn_at = ma.fields.DateTime(allow_none=True)
    reason = ma.fields.String(allow_none=True)


class EnrolmentArgs(PageArgs):
    active = ma.fields.Boolean(load_default=None, metadata={"description": "Only active (true) or withdrawn (false)"})


class BalanceRowSchema(Schema):
    arm = ma.fields.String()
    stores = ma.fields.Integer()
    pre_mean = ma.fields.Float()
    pre_sd = ma.fields.Float()
    smd = ma.fields.Float(allow_nan=True, allow_none=True)


class BalanceSchema(Schema):
    measure = ma.fields.String()
    arms = ma.fields.List(ma.fields.Nested(BalanceRowSchema))


class TimelineEventSchema(Schema):
    at = ma.fields.DateTime()
    actor = ma.fields.String()
    action = ma.fields.String()
    entity = ma.fields.Function(lambda e: f"{e.entity_type}:{e.entity_id}")
    before = ma.fields.Dict(allow_none=True)
    after = ma.fields.Dict(allow_none=True)


@blp.route("")
class Pilots(MethodView):
    @blp.arguments(PilotListArgs, location="query")
    @blp.response(200, page_schema(PilotSchema))
    def get(self, args):
        """List pilots"""
        stmt = select(Pilot)
        if "state" in args:
            stmt = stmt.where(Pilot.state == args["state"])
        return paginate(db.session, stmt, Pilot.id, args["limit"], args["cursor"])

    @blp.arguments(PilotIn)
    @blp.response(201, PilotSchema)
    def post(self, data):
        """Create a draft pilot with its stages"""
        pilot = rollout.create_pilot(db.session, current().actor, get_programme(db.session, data["programme"]), data)
        db.session.commit()
        return pilot


IMPORT_BODY = {"required": True, "content": {
    "application/json": {"schema": {"type": "object", "description": "The pilot: its settings as for POST /pilots, "
                                    "stages with started_at and ended_at, enrolments (a store pilot's with "
                                    "each store's arm), assignments (a customer pilot's)"}},
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "pilot": {"type": "string", "description": "The same JSON document without the lists sent as CSVs"},
        "assignments": {"type": "string", "format": "binary",
                        "description": "CSV: customer, variant, stage, exposed_at (ISO 8601 with offset), store"},
        "enrolments": {"type": "string", "format": "binary",
                       "description": "CSV: store, stage, arm (a store pilot's), enrolled_at, withdrawn_at"}}}}}}


@blp.route("/import")
class PilotImport(MethodView):
    @blp.doc(requestBody=IMPORT_BODY)
    @blp.response(201, PilotSchema)
    def post(self):
        """Import a pilot that already ran (stages with their actual times, enrolments, assignments), all or nothing"""
        if request.mimetype == "multipart/form-data":
            request_data()
            files = request.files
            if "pilot" not in request.form or not ("assignments" in files or "enrolments" in files):
                raise Invalid("Send the parts 'pilot' (JSON) and 'assignments' or 'enrolments' (CSV), or both.",
                              details={"fields": {"pilot": ["Required part."], "assignments": [
                                  "Required part for a customer pilot."], "enrolments": [
                                  "Required part for a store pilot (unless in the JSON)."]}})
            try:
                document = json.loads(request.form["pilot"])
            except ValueError:
                raise BadRequest("The 'pilot' part is not valid JSON.", code="malformed_json") from None
            rows = csv_rows(files["assignments"].stream, pilot_import.ASSIGNMENT_FIELDS[:4],
                            pilot_import.ASSIGNMENT_FIELDS) if "assignments" in files else None
            enrolled = csv_rows(files["enrolments"].stream, pilot_import.ENROLMENT_FIELDS[:2],
                                pilot_import.ENROLMENT_FIELDS) if "enrolments" in files else None
            summary = pilot_import.import_pilot(db.session, current().actor, document, rows, enrolled)
        else:
            summary = pilot_import.import_pilot(db.session, current().actor, json_body())
        db.session.commit()
        return rollout.get_pilot(db.session, summary["pilot"])


@blp.route("/<key>")
class PilotByKey(MethodView):
    @blp.response(200, PilotSchema)
    def get(self, key):
        """Show a pilot with its stages"""
        return rollout.get_pilot(db.session, key)

    @blp.arguments(PilotPatch)
    @blp.response(200, PilotSchema)
    def patch(self, data, key):
        """Change a pilot's settings (a draft's: also its whole list of stages)"""
        pilot = pilot_drafts.save_draft(db.session, current().actor, rollout.get_pilot(db.session, key), data)
        db.session.commit()
        return pilot

    @blp.response(204)
    def delete(self, key):
        """Delete a draft pilot (cancel a started one instead)"""
        pilot = rollout.get_pilot(db.session, key)
        if pilot.state != "draft":
            raise Conflict("Only a draft pilot can be deleted; cancel it instead.", code="invalid_transition")
        from pilot.audit import record
        record(db.session, current().actor, "delete", "pilot", pilot.key, before=rollout.pilot_dict(pilot))
        db.session.delete(pilot)
        db.session.commit()


@blp.route("/<key>/stages")
class PilotStages(MethodView):
    @blp.arguments(StageIn)
    @blp.response(201, StageSchema)
    def post(self, data, key):
        """Append a stage"""
        stage = rollout.add_stage(db.session, current().actor, rollout.get_pilot(db.session, key), data)
        db.session.commit()
        return stage


@blp.route("/<key>/stages/<int(max=1000):position>")
class PilotStageByPosition(MethodView):
    @blp.arguments(StageIn(partial=True))
    @blp.response(200, StageSchema)
    def patch(self, data, key, position):
        """Change a stage (the running one keeps its scope and variants)"""
        stage = rollout.update_stage(db.session, current().actor, rollout.get_pilot(db.session, key), position, data)
        db.session.commit()
        return stage


@blp.route("/<key>/<any(start, pause, resume, advance, complete, rollback, cancel):action>")
class PilotAction(MethodView):
    @blp.arguments(ActionIn)
    @blp.response(200, PilotSchema)
    @blp.alt_response(202, schema=ApprovalSchema, description="Waiting for a second person's approval")
    def post(self, data, key, action):
        """Start, pause, resume, advance, complete, roll back or cancel a pilot"""
        pilot = rollout.get_pilot(db.session, key)
        approval = governance.request_action(db.session, current().actor, pilot, action, data["reason"],
                                             data["override"])
        if approval is not None:
            db.session.commit()
            return make_response(ApprovalSchema().dump(approval), 202)
        pilot = rollout.transition(db.session, current().actor, pilot, action, data["reason"], data["override"])
        db.session.commit()
        if data["assign"] and action in ("start", "advance") and bulk_jobs.wanted(pilot):
            bulk_jobs.start(current_app._get_current_object(), db.session, pilot)  # after the commit: it reads it
        return pilot


@blp.route("/<key>/enrolments")
class PilotEnrolments(MethodView):
    @blp.arguments(EnrolmentArgs, location="query")
    @blp.response(200, page_schema(EnrolmentSchema))
    def get(self, args, key):
        """Store enrolments of the pilot, with their history"""
        pilot = rollout.get_pilot(db.session, key)
        stmt = select(Enrolment).where(Enrolment.pilot_id == pilot.id)
        if args["active"] is not None:
            stmt = stmt.where(Enrolment.withdrawn_at.is_(None) if args["active"] else
                              Enrolment.withdrawn_at.is_not(None))
        return paginate(db.session, stmt, Enrolment.id, args["limit"], args["cursor"])


@blp.route("/<key>/balance")
class PilotBalance(MethodView):
    @blp.response(200, BalanceSchema)
    def get(self, key):
        """Pre-period balance of a store-level pilot's arms (standardised mean differences)"""
        pilot = rollout.get_pilot(db.session, key)
        if pilot.unit != "store":
            raise Conflict("Balance tables are for store-level pilots.", code="not_store_level")
        enrolments = rollout.active_enrolments(db.session, pilot)
        values = pre_period_values(db.session, [e.store for e in enrolments], pilot.started_at)
        control = next(v.key for v in pilot.programme.variants if v.mechanic == "control")
        return {"measure": "pre_period", "arms": balance(values, {e.store.code: e.arm for e in enrolments}, control)}


@blp.route("/<key>/timeline")
class PilotTimeline(MethodView):
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, page_schema(TimelineEventSchema))
    def get(self, args, key):
        """Every change of the pilot and its stages, oldest first"""
        pilot = rollout.get_pilot(db.session, key)
        stmt = select(AuditEvent).where(or_(
            (AuditEvent.entity_type == "pilot") & (AuditEvent.entity_id == pilot.key),
            (AuditEvent.entity_type == "stage") & AuditEvent.entity_id.startswith(f"{pilot.key}/", autoescape=True)))
        return paginate(db.session, stmt, AuditEvent.id, args["limit"], args["cursor"])
