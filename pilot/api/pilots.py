"""Pilots: configuration, stages, lifecycle actions, enrolments, balance and timeline."""
import marshmallow as ma
from flask.views import MethodView
from sqlalchemy import or_, select

from pilot import rollout
from pilot.api.base import Blueprint, PageArgs, Schema, page_schema, paginate
from pilot.api.regions import CODE
from pilot.auth import current
from pilot.db import db
from pilot.errors import Conflict
from pilot.metrics import CATALOGUE
from pilot.models import AuditEvent, Enrolment, Pilot
from pilot.models.pilots import STATES
from pilot.programmes import get_programme
from pilot.store_randomisation import balance, pre_period_values

blp = Blueprint("pilots", __name__, url_prefix="/pilots", description="Pilots, stages and their lifecycle")

METRIC = ma.validate.OneOf(list(CATALOGUE))


class GateSchema(Schema):
    min_days = ma.fields.Integer(validate=ma.validate.Range(0, 365))
    min_units_per_arm = ma.fields.Integer(validate=ma.validate.Range(0, 10**9))
    require_significant = ma.fields.Boolean()
    min_roi = ma.fields.Float(validate=ma.validate.Range(-10, 100))
    no_guardrail_harm = ma.fields.Boolean()
    no_srm = ma.fields.Boolean()


class StageIn(Schema):
    name = ma.fields.String(validate=ma.validate.Length(1, 200))
    store_codes = ma.fields.List(ma.fields.String(), load_default=list)
    region_codes = ma.fields.List(ma.fields.String(), load_default=list)
    allocation = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Float(validate=ma.validate.Range(0, 1)),
                                required=True, metadata={"description": "Variant key -> weight; sums to 1"})
    eligible_groups = ma.fields.List(ma.fields.String(), load_default=None, allow_none=True,
                                     metadata={"description": "Customer group keys; null for everyone"})
    planned_start = ma.fields.Date(load_default=None, allow_none=True)
    planned_end = ma.fields.Date(load_default=None, allow_none=True)
    gate = ma.fields.Nested(GateSchema, load_default=dict)


class GuardrailSchema(Schema):
    metric = ma.fields.String(required=True, validate=METRIC)
    max_harm = ma.fields.Float(load_default=0.0, validate=ma.validate.Range(0, 1),
                               metadata={"description": "Relative harm tolerated before the guardrail trips"})


class PilotIn(Schema):
    key = ma.fields.String(required=True, validate=CODE)
    name = ma.fields.String(required=True, validate=ma.validate.Length(1, 200))
    programme = ma.fields.String(required=True)
    unit = ma.fields.String(load_default="customer", validate=ma.validate.OneOf(["customer", "store"]))
    primary_metric = ma.fields.String(load_default="spend_per_customer", validate=METRIC)
    guardrails = ma.fields.List(ma.fields.Nested(GuardrailSchema), load_default=list)
    alpha = ma.fields.Float(load_default=0.05, validate=ma.validate.Range(0.001, 0.5))
    power = ma.fields.Float(load_default=0.8, validate=ma.validate.Range(0.5, 0.999))
    mde = ma.fields.Float(load_default=0.02, validate=ma.validate.Range(0.0001, 10),
                          metadata={"description": "Minimum relative effect worth detecting"})
    margin_rate = ma.fields.Float(load_default=0.3, validate=ma.validate.Range(0.001, 1))
    layer = ma.fields.String(load_default="default", validate=CODE)
    salt = ma.fields.String(load_default=None, validate=ma.validate.Length(1, 64))
    stages = ma.fields.List(ma.fields.Nested(StageIn), required=True, validate=ma.validate.Length(1, 20))


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
    state = ma.fields.String()
    current_stage = ma.fields.Integer(allow_none=True)
    started_at = ma.fields.DateTime(allow_none=True)
    ended_at = ma.fields.DateTime(allow_none=True)
    stages = ma.fields.List(ma.fields.Nested(StageSchema))


class PilotListArgs(PageArgs):
    state = ma.fields.String(validate=ma.validate.OneOf(STATES))


class ActionIn(Schema):
    reason = ma.fields.String(load_default=None, validate=ma.validate.Length(1, 500))


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


@blp.route("/<key>")
class PilotByKey(MethodView):
    @blp.response(200, PilotSchema)
    def get(self, key):
        """Show a pilot with its stages"""
        return rollout.get_pilot(db.session, key)

    @blp.arguments(PilotPatch)
    @blp.response(200, PilotSchema)
    def patch(self, data, key):
        """Change a pilot's settings"""
        pilot = rollout.update_pilot(db.session, current().actor, rollout.get_pilot(db.session, key), data)
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
    def post(self, data, key, action):
        """Start, pause, resume, advance, complete, roll back or cancel a pilot"""
        pilot = rollout.transition(db.session, current().actor, rollout.get_pilot(db.session, key), action,
                                   data["reason"])
        db.session.commit()
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
