"""The analysis plan (versions and amendments), the gate check, and layers with their live pilots."""
import marshmallow as ma
from flask.views import MethodView

from pilot import governance, rollout
from pilot.api.base import Blueprint, Schema
from pilot.auth import current
from pilot.db import db
from pilot.pilot_schemas import METRIC, GateSchema, GuardrailSchema

blp = Blueprint("governance", __name__, url_prefix="", description="Analysis plan, gate check and layers")


class AnalysisPlanVersionSchema(Schema):
    version = ma.fields.Integer()
    plan = ma.fields.Dict()
    reason = ma.fields.String(allow_none=True, metadata={"description": "Why it was amended (null: version 1)"})
    actor = ma.fields.String()
    created_at = ma.fields.DateTime()


class AnalysisPlanSchema(Schema):
    pilot = ma.fields.String()
    plan_version = ma.fields.Integer(allow_none=True)
    locked = ma.fields.Boolean()
    plan = ma.fields.Dict()
    versions = ma.fields.List(ma.fields.Nested(AnalysisPlanVersionSchema))


class AmendmentIn(Schema):
    reason = ma.fields.String(required=True, validate=ma.validate.Length(1, 1000))
    primary_metric = ma.fields.String(validate=METRIC)
    guardrails = ma.fields.List(ma.fields.Nested(GuardrailSchema))
    alpha = ma.fields.Float(validate=ma.validate.Range(0.001, 0.5))
    power = ma.fields.Float(validate=ma.validate.Range(0.5, 0.999))
    mde = ma.fields.Float(validate=ma.validate.Range(0.0001, 10))
    gates = ma.fields.Dict(keys=ma.fields.String(validate=ma.validate.Regexp(r"^[0-9]{1,3}$")),
                           values=ma.fields.Nested(GateSchema), metadata={"description": "Stage position -> gate"})


class GateCheckSchema(Schema):
    stage = ma.fields.Integer(allow_none=True)
    analysis = ma.fields.Integer(allow_none=True)
    decision = ma.fields.String(allow_none=True)
    met = ma.fields.Boolean()
    conditions = ma.fields.List(ma.fields.Dict())


class LayerSchema(Schema):
    layer = ma.fields.String()
    live_pilots = ma.fields.List(ma.fields.Dict())


def _plan(pilot):
    return {"pilot": pilot.key, "plan_version": pilot.plan_version, "locked": pilot.plan_version is not None,
            "plan": governance.plan_of(pilot), "versions": governance.plan_versions(db.session, pilot)}


@blp.route("/pilots/<key>/analysis-plan")
class AnalysisPlan(MethodView):
    @blp.response(200, AnalysisPlanSchema)
    def get(self, key):
        """The pilot's analysis plan and its versions"""
        return _plan(rollout.get_pilot(db.session, key))


@blp.route("/pilots/<key>/analysis-plan/amendments")
class AnalysisPlanAmendments(MethodView):
    @blp.arguments(AmendmentIn)
    @blp.response(201, AnalysisPlanSchema)
    def post(self, data, key):
        """Amend the locked plan with a reason: the next plan version"""
        pilot = rollout.get_pilot(db.session, key)
        reason = data.pop("reason")
        governance.amend_plan(db.session, current().actor, pilot, data, reason)
        db.session.commit()
        return _plan(pilot)


@blp.route("/pilots/<key>/gate")
class PilotGate(MethodView):
    @blp.response(200, GateCheckSchema)
    def get(self, key):
        """The current stage's gate against the latest fresh analysis, condition by condition"""
        check = governance.gate_check(db.session, rollout.get_pilot(db.session, key))
        return {**check, "met": bool(check["conditions"]) and not governance.unmet(check)}


@blp.route("/layers")
class Layers(MethodView):
    @blp.response(200, LayerSchema(many=True))
    def get(self):
        """Every layer with its live pilots"""
        return governance.layers(db.session)
