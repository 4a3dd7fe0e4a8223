"""Assignments: one customer at the till, or every eligible customer at once; counts and SRM."""
import marshmallow as ma
from flask.views import MethodView

from pilot import bulk_jobs, rollout
from pilot.api.base import Blueprint, PageArgs, Schema, after_cursor, keyset_page, page_schema
from pilot.api.customers import CustomerIn
from pilot.api.programmes import VariantSchema
from pilot.assignment import (
    AssignmentDb,
    TokenNotLive,
    assign_bulk,
    assign_customer,
    assignment_counts,
    holdout,
    srm_by_stage,
    stage_counts,
)
from pilot.assignment_list import assignment_rows, check_filters
from pilot.auth import STORE, current, forget, store_scope_error, token_hash, unauthenticated
from pilot.db import db
from pilot.errors import Conflict, PilotError

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


class VariantOut(VariantSchema):
    """A programme's variant as the till gets it: its description already written out."""
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


class AssignmentListArgs(PageArgs):
    variant = ma.fields.String(metadata={"description": "Only this variant's customers"})
    store = ma.fields.String(metadata={"description": "Only customers of this home store (a store token: its own)"})
    group = ma.fields.String(metadata={"description": "Only this customer group (key, or 'other'), as grouped now"})
    since = ma.fields.AwareDateTime(metadata={"description": "Only assignments made at or after this time "
                                                             "(ISO 8601 with a UTC offset)"})


class AssignmentRow(Schema):
    customer = ma.fields.String(metadata={"description": "Customer external id"})
    variant = ma.fields.String()
    stage = ma.fields.Integer(metadata={"description": "The stage the customer was assigned in"})
    home_store = ma.fields.String(allow_none=True)
    store = ma.fields.String(allow_none=True, metadata={"description": "The store the assignment was made at"})
    group = ma.fields.String(metadata={"description": "The customer's group now (first match), or 'other'"})
    assigned_at = ma.fields.DateTime()


def _revoked() -> PilotError:
    forget(token_hash())
    return unauthenticated()


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


@blp.route("/<key>/assignments")
class AssignmentList(MethodView):
    @blp.arguments(AssignmentListArgs, location="query")
    @blp.response(200, page_schema(AssignmentRow))
    def get(self, args, key):
        """List who got which variant (for the CRM), in customer order, page by page"""
        principal = current()
        if principal.role == STORE:
            refused = store_scope_error(principal, args.get("store") or principal.store_code)
            if refused:
                raise refused
            args["store"] = principal.store_code
        pilot = rollout.get_pilot(db.session, key)
        check_filters(db.session, pilot, args)
        rows = assignment_rows(db.session, pilot, args, after_cursor(args["cursor"]), args["limit"] + 1)
        return keyset_page(rows, args["limit"], lambda r: r["customer_id"])


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
        return {"assigned_now": 0, **counts, "stages": srm_by_stage(db.session, pilot, stage_counts(db.session, pilot))}


class ProgressOut(Schema):
    status = ma.fields.String(allow_none=True, metadata={"description": "running, done or failed; null: none yet"})
    stage = ma.fields.Integer(allow_none=True)
    started_at = ma.fields.DateTime(allow_none=True)
    finished_at = ma.fields.DateTime(allow_none=True)
    assigned_in_stage = ma.fields.Integer(allow_none=True)
    assigned_now = ma.fields.Integer(allow_none=True)
    error = ma.fields.String(allow_none=True)


@blp.route("/<key>/assignments/progress")
class AssignmentsProgress(MethodView):
    @blp.response(200, ProgressOut)
    def get(self, key):
        """The latest background assignment of the pilot (started by start or advance with `assign`)"""
        pilot = rollout.get_pilot(db.session, key)
        return bulk_jobs.progress(db.session, pilot) or {"status": None}
