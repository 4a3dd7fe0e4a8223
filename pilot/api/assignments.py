"""Assignments: one customer at the till, or every eligible customer at once; counts and SRM."""
import marshmallow as ma
from flask.views import MethodView

from experiments.srm import srm_test
from pilot import rollout
from pilot.api.base import Blueprint, Schema
from pilot.api.customers import CustomerIn
from pilot.assignment import (
    AssignmentDb,
    Holdout,
    TokenNotLive,
    assign_bulk,
    assign_one,
    assignment_counts,
    expected_shares,
    holdout,
    read_context,
    stage_counts,
)
from pilot.auth import Principal, current, forget, store_scope_error, token_hash, unauthenticated
from pilot.customers import customer_row
from pilot.db import db
from pilot.errors import Conflict, Invalid, NotFound, PilotError
from pilot.mechanics import describe

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


def _revoked() -> PilotError:
    forget(token_hash())
    return unauthenticated()


def _new_customer(data, t) -> dict | None:
    """The columns of the request's unknown customer (validated by NewCustomerIn), or None."""
    if t.customer_id is not None or data["new_customer"] is None:
        return None
    fields = data["new_customer"]
    if fields.get("home_store") is not None and t.new_home_id is None:
        raise Invalid(f"Unknown store {fields['home_store']!r}.",
                       details={"fields": {"new_customer": {"home_store": ["Unknown store."]}}})
    return customer_row(data["customer"], fields, t.new_home_id)


def assign_customer(tdb: AssignmentDb, key: str, data: dict, principal: Principal, hashed: str, held: Holdout) -> dict:
    """The answer to one assignment request (AssignIn's data) of a caller allowed to assign: the
    variant, or why there is none. Raises PilotError for a request that cannot be answered, and
    TokenNotLive when the token (by its hash) turns out revoked. Shared by the view and the lean
    till path (pilot.api.fast_assignment), so both answer alike."""
    new_home = (data["new_customer"] or {}).get("home_store")
    t = read_context(tdb, hashed, key, data["customer"], data["store"], new_home)
    if t is None:
        raise TokenNotLive
    if t.pilot_id is None:
        raise NotFound(f"No pilot {key!r}.")
    # a store token acts for its own store: it buys there, and a customer it creates is homed there
    for code in (t.store_code, new_home):
        if code is not None and (refused := store_scope_error(principal, code)):
            raise refused
    if data["store"] is not None and t.store_id is None:
        raise Invalid(f"Unknown store {data['store']!r}.", details={"fields": {"store": ["Unknown store."]}})
    decision = assign_one(tdb, t, held, _new_customer(data, t))
    v = t.variant(decision.variant)
    return {"pilot": key, "customer": data["customer"], "assigned": v is not None,
            "reason": decision.reason, "assigned_at": decision.assigned_at, "new": decision.new,
            "variant": None if v is None else {**v, "description": describe(v["mechanic"], v["parameters"])}}


@blp.route("/<key>/assignments")
class Assignments(MethodView):
    # Every write of an assignment is one race-safe statement (see assignment.assign_one), so the
    # request runs without BEGIN/COMMIT round trips; all checks come before any write. The context
    # query reads the token again, so a token already seen live needs no query of its own (auth._seen).
    # On PostgreSQL most requests never reach this view: pilot.api.fast_assignment answers them with
    # `assign_customer` too.
    autocommit = True
    rechecks_token = True

    @blp.arguments(AssignIn)
    @blp.response(200, AssignOut)
    def post(self, data, key):
        """Assign one customer (sticky): the variant to apply, or why there is none"""
        try:
            answer = assign_customer(AssignmentDb.of(db.session), key, data, current(), token_hash(), holdout())
        except TokenNotLive:
            raise _revoked() from None
        db.session.commit()
        return answer


@blp.route("/<key>/assignments/bulk")
class AssignmentsBulk(MethodView):
    @blp.response(200, BulkOut)
    def post(self, key):
        """Assign every eligible customer of the enrolled stores at once (set-based)"""
        pilot = rollout.get_pilot(db.session, key)
        if pilot.state != "running":
            raise Conflict(f"Pilot {key!r} is {pilot.state}; only a running pilot assigns.",
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
    """χ² of each stage's assignments against that stage's weights (each period's units against the
    weights of their period when a running stage's weights changed: assignment.expected_shares)."""
    out = []
    for position, counts in sorted(by_stage.items()):
        stage = pilot.stage(position)
        keys = sorted(k for k in stage.allocation if stage.allocation[k] > 0 or counts.get(k))
        weights = expected_shares(db.session, pilot, stage, arms=keys) or stage.allocation
        res = srm_test([counts.get(k, 0) for k in keys], [weights.get(k, 0.0) for k in keys])
        finite = lambda x: x if x == x and x not in (float("inf"),) else None  # noqa: E731
        out.append({"stage": position, "counts": {k: counts.get(k, 0) for k in keys},
                    "weights": {k: weights.get(k, 0.0) for k in keys}, "statistic": finite(res.statistic),
                    "p_value": finite(res.p_value), "mismatch": res.mismatch})
    return out
