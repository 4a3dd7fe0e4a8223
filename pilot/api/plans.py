"""Planning a pilot before it starts: the plan of a configuration (not saved) or of a saved pilot, and
the proposed stores of a store pilot (pilot.planner, pilot.store_selection)."""
import marshmallow as ma
from flask.views import MethodView

from pilot import planner, rollout, store_selection
from pilot.api.base import Blueprint, Schema
from pilot.db import db
from pilot.metrics import CATALOGUE
from pilot.pilot_schemas import StageIn

blp = Blueprint("plans", __name__, url_prefix="/pilots", description="Planning: power, MDE and store selection")


class PlanOptions(Schema):
    stage = ma.fields.Integer(load_default=None, validate=ma.validate.Range(1, 20),
                              metadata={"description": "The stage to plan (default: the current one, else the first)"})
    weeks = ma.fields.Integer(load_default=None, validate=ma.validate.Range(1, 52), metadata={
        "description": "Planned duration in weeks (default: the stage's planned dates, else 8)"})
    history_weeks = ma.fields.Integer(load_default=planner.DEFAULT_HISTORY_WEEKS, validate=ma.validate.Range(1, 52),
                                      metadata={"description": "A customer is eligible when active in these weeks"})
    simulations = ma.fields.Integer(load_default=planner.DEFAULT_SIMULATIONS, validate=ma.validate.Range(0, 1000),
                                    metadata={"description": "Simulated pilots on the history (0: analytic only)"})
    seed = ma.fields.Integer(load_default=0, validate=ma.validate.Range(0, 2**31 - 1))


class PlanIn(PlanOptions):
    programme = ma.fields.String(required=True)
    unit = ma.fields.String(load_default="customer", validate=ma.validate.OneOf(["customer", "store"]))
    primary_metric = ma.fields.String(load_default="spend_per_customer", validate=ma.validate.OneOf(list(CATALOGUE)))
    alpha = ma.fields.Float(load_default=0.05, validate=ma.validate.Range(0.001, 0.5))
    power = ma.fields.Float(load_default=0.8, validate=ma.validate.Range(0.05, 0.999))
    mde = ma.fields.Float(load_default=0.02, validate=ma.validate.Range(0.0001, 10))
    start = ma.fields.AwareDateTime(load_default=None, metadata={
        "description": "Planned start: history before it is used (default: the stage's planned start, else now)"})
    stages = ma.fields.List(ma.fields.Nested(StageIn), required=True, validate=ma.validate.Length(1, 20))


class StoresIn(PlanIn):
    include = ma.fields.List(ma.fields.String(), load_default=list,
                             metadata={"description": "Store codes that must be in"})
    exclude = ma.fields.List(ma.fields.String(), load_default=list, metadata={"description": "Store codes kept out"})
    stores = ma.fields.Integer(load_default=None, validate=ma.validate.Range(4, 500),
                               metadata={"description": "Stores in the design (treatment and control)"})
    max_share_at_risk = ma.fields.Float(load_default=None, validate=ma.validate.Range(0.001, 1), metadata={
        "description": "Largest share of the candidates' sales in treatment stores"})
    designs = ma.fields.Integer(load_default=5, validate=ma.validate.Range(1, 20))


class PlanSchema(Schema):
    pilot = ma.fields.String(metadata={"description": "GET /pilots/{key}/plan: the pilot planned"})
    stage = ma.fields.Integer()
    unit = ma.fields.String()
    primary_metric = ma.fields.String()
    arm = ma.fields.String(metadata={"description": "The treatment planned for (the smallest weight)"})
    control = ma.fields.String()
    target_mde_rel = ma.fields.Float()
    alpha = ma.fields.Float()
    power = ma.fields.Float()
    weeks = ma.fields.Integer()
    start = ma.fields.String()
    method = ma.fields.String(metadata={"description": "cuped (customer pilots) or store_decision (store pilots)"})
    eligible = ma.fields.Dict(metadata={"description": "Eligible customers, new ones per week, stores; assumptions"})
    baseline = ma.fields.Dict(metadata={"description": "Mean, sd, pre/post correlation, CUPED's reduction"})
    store_level = ma.fields.Dict(metadata={"description": "Store pilots: spread of the change, ICC, design effect"})
    power_curve = ma.fields.List(ma.fields.Dict(), metadata={"description": "Weeks 1–16: power and MDE"})
    analytic = ma.fields.Dict(metadata={"description": "Power and MDE at the planned end, with assumptions"})
    simulated = ma.fields.Dict(allow_none=True, metadata={
        "description": "Power (and for stores the MDE) by simulated pilots on the history, with assumptions"})
    powered = ma.fields.Boolean()
    alternatives = ma.fields.List(ma.fields.Dict(), metadata={"description": "When underpowered, each with its MDE"})
    message = ma.fields.String()
    assumptions = ma.fields.List(ma.fields.String())
    timings = ma.fields.Dict(metadata={"description": "Seconds reading the history and computing"})


class StoreDesignsSchema(Schema):
    candidates = ma.fields.Integer()
    weeks = ma.fields.Integer()
    target_mde_rel = ma.fields.Float()
    designs = ma.fields.List(ma.fields.Dict(), metadata={
        "description": "Ranked designs: stores and arms, simulated MDE and power, balance (SMDs)"})
    random_designs = ma.fields.Dict(metadata={"description": "The balance of random designs of the same size"})
    assumptions = ma.fields.List(ma.fields.String())


@blp.route("/plan")
class PilotPlan(MethodView):
    @blp.arguments(PlanIn)
    @blp.response(200, PlanSchema)
    def post(self, data):
        """Plan a pilot configuration (not saved): eligible units, baseline, power curve, MDE, simulated power"""
        return planner.plan_config(db.session, data)


@blp.route("/<key>/plan")
class PilotPlanByKey(MethodView):
    @blp.arguments(PlanOptions, location="query")
    @blp.response(200, PlanSchema)
    def get(self, args, key):
        """Plan a saved pilot's stage from the history before its (planned) start"""
        return planner.plan_pilot(db.session, rollout.get_pilot(db.session, key), args)


@blp.route("/plan/stores")
class PilotPlanStores(MethodView):
    @blp.arguments(StoresIn)
    @blp.response(200, StoreDesignsSchema)
    def post(self, data):
        """Propose the stores of a store pilot: ranked matched designs with their MDE and pre-period balance"""
        return store_selection.propose_config(db.session, data)
