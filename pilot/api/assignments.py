"""Assignments: one customer at the till, or every eligible customer at once; counts and SRM."""
import marshmallow as ma
from flask import current_app
from flask.views import MethodView
from sqlalchemy import select

from experiments.srm import srm_test
from pilot import rollout
from pilot.api.base import Blueprint, Schema
from pilot.api.customers import CustomerIn
from pilot.assigning import Holdout, assign_bulk, assign_one, assignment_counts, stage_counts
from pilot.auth import current, require_store_scope
from pilot.customers import CustomerWriter
from pilot.batches import RowErrors
from pilot.db import db
from pilot.errors import ApiError
from pilot.mechanics import describe
from pilot.models import Customer, Store

blp = Blueprint("assignments", __name__, url_prefix="/pilots", description="Assigning customers to variants")


class NewCustomerIn(CustomerIn):
    external_id = ma.fields.String(load_default=None)


class AssignIn(Schema):
    customer = ma.fields.String(required=True, validate=ma.validate.Length(1, 128),
                                metadata={"description": "Customer external id"})
    store = ma.fields.String(load_default=None, metadata={"description": "Store code of the purchase "
                                                                         "(default: the customer's home store)"})
    new_customer = ma.fields.Nested(NewCustomerIn, load_default=None,
                                    metadata={"description": "Attributes to create an unknown customer with"})


class VariantOut(Schema):
    key = ma.fields.String()
    name = ma.fields.String()
    mechanic = ma.fields.String()
    parameters = ma.fields.Dict()
    description = ma.fields.String()


class AssignOut(Schema):
    pilot = ma.fields.String()
    customer = ma.fields.String()
    assigned = ma.fields.Boolean()
    reason = ma.fields.String(allow_none=True, metadata={"description": "pilot_not_running, unknown_customer, "
                              "no_store, store_not_enrolled, in_holdout, group_not_eligible, "
                              "in_other_pilot_of_layer, no_allocation"})
    variant = ma.fields.Nested(VariantOut, allow_none=True)
    assigned_at = ma.fields.DateTime(allow_none=True)
    new = ma.fields.Boolean()


class BulkOut(Schema):
    assigned_now = ma.fields.Integer()
    variants = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Integer())
    reasons = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Integer(allow_none=True))


class StageSrm(Schema):
    stage = ma.fields.Integer()
    counts = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Integer())
    weights = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Float())
    statistic = ma.fields.Float(allow_none=True)
    p_value = ma.fields.Float(allow_none=True)
    mismatch = ma.fields.Boolean()


class SummaryOut(BulkOut):
    stages = ma.fields.List(ma.fields.Nested(StageSrm))


def holdout() -> Holdout:
    """The global holdout configured for this installation."""
    return Holdout(current_app.config["HOLDOUT_SHARE"], current_app.config["HOLDOUT_SALT"])


def _customer(data):
    customer = db.session.scalar(select(Customer).where(Customer.external_id == data["customer"]))
    if customer is None and data["new_customer"] is not None:
        errors = RowErrors()
        writer = CustomerWriter(db.session, errors, on_conflict="nothing")
        writer.add(1, {**data["new_customer"], "external_id": data["customer"]})
        writer.flush()
        if errors.count:
            raise ApiError(422, errors.rows[0]["message"], details={"fields": {"new_customer": errors.rows}})
        customer = db.session.scalar(select(Customer).where(Customer.external_id == data["customer"]))
    return customer


@blp.route("/<key>/assignments")
class Assignments(MethodView):
    @blp.arguments(AssignIn)
    @blp.response(200, AssignOut)
    def post(self, data, key):
        """Assign one customer (sticky): the variant to apply, or why there is none"""
        pilot = rollout.get_pilot(db.session, key)
        customer = _customer(data)
        store_code = data["store"]
        if store_code is None and customer is not None and customer.home_store_id:
            store_code = db.session.scalar(select(Store.code).where(Store.id == customer.home_store_id))
        if store_code is not None:
            require_store_scope(store_code)
        elif current().role == "store":
            store_code = current().store_code
        store = db.session.scalar(select(Store).where(Store.code == store_code)) if store_code else None
        if store_code and store is None:
            raise ApiError(422, f"Unknown store {store_code!r}.", details={"fields": {"store": ["Unknown store."]}})
        decision = assign_one(db.session, pilot, customer, store, holdout())
        db.session.commit()
        variants = {v.key: v for v in pilot.programme.variants}
        v = variants.get(decision.variant)
        return {"pilot": pilot.key, "customer": data["customer"], "assigned": v is not None,
                "reason": decision.reason, "assigned_at": decision.assigned_at, "new": decision.new,
                "variant": None if v is None else {"key": v.key, "name": v.name, "mechanic": v.mechanic,
                                                   "parameters": v.parameters,
                                                   "description": describe(v.mechanic, v.parameters)}}


@blp.route("/<key>/assignments/bulk")
class AssignmentsBulk(MethodView):
    @blp.response(200, BulkOut)
    def post(self, key):
        """Assign every eligible customer of the enrolled stores at once (set-based)"""
        pilot = rollout.get_pilot(db.session, key)
        if pilot.state != "running":
            raise ApiError(409, f"Pilot {key!r} is {pilot.state}; only a running pilot assigns.",
                           code="pilot_not_running")
        counts = assign_bulk(db.session, pilot, holdout())
        db.session.commit()
        return counts


@blp.route("/<key>/assignments/summary")
class AssignmentsSummary(MethodView):
    @blp.response(200, SummaryOut)
    def get(self, key):
        """Customers per variant and per reason, and the sample-ratio check of each stage"""
        pilot = rollout.get_pilot(db.session, key)
        counts = assignment_counts(db.session, pilot, holdout())
        return {"assigned_now": 0, **counts, "stages": srm_by_stage(pilot, stage_counts(db.session, pilot))}


def srm_by_stage(pilot, by_stage):
    """χ² of each stage's assignments against that stage's weights."""
    out = []
    for position, counts in sorted(by_stage.items()):
        weights = pilot.stage(position).allocation
        keys = sorted(k for k in weights if weights[k] > 0 or counts.get(k))
        res = srm_test([counts.get(k, 0) for k in keys], [weights.get(k, 0.0) for k in keys])
        finite = lambda x: x if x == x and x not in (float("inf"),) else None  # noqa: E731
        out.append({"stage": position, "counts": {k: counts.get(k, 0) for k in keys},
                    "weights": {k: weights.get(k, 0.0) for k in keys}, "statistic": finite(res.statistic),
                    "p_value": finite(res.p_value), "mismatch": res.mismatch})
    return out
