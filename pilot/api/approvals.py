"""Approvals: lifecycle actions of a `second_person` pilot waiting for another person."""
import marshmallow as ma
from flask.views import MethodView

from pilot import governance, rollout
from pilot.api.base import Blueprint, Schema
from pilot.auth import current
from pilot.db import db

blp = Blueprint("approvals", __name__, url_prefix="/pilots", description="Approvals by a second person")


class ApprovalSchema(Schema):
    id = ma.fields.Integer()
    action = ma.fields.String()
    needs = ma.fields.List(ma.fields.String(), metadata={
        "description": "Why a second person is asked: override, against_recommendation, rollback"})
    status = ma.fields.String(metadata={"description": "pending, approved or rejected"})
    reason = ma.fields.Function(lambda a: a.request.get("reason"))
    override = ma.fields.Function(lambda a: a.request.get("override", False))
    unmet = ma.fields.Function(lambda a: a.request.get("unmet", []), metadata={
        "description": "The gate's unmet conditions when it was requested"})
    requested_by = ma.fields.String()
    requested_at = ma.fields.DateTime()
    decided_by = ma.fields.String(allow_none=True)
    decided_at = ma.fields.DateTime(allow_none=True)
    decision_reason = ma.fields.String(allow_none=True)


class DecisionIn(Schema):
    reason = ma.fields.String(load_default=None, validate=ma.validate.Length(1, 1000))


@blp.route("/<key>/approvals")
class PilotApprovals(MethodView):
    @blp.response(200, ApprovalSchema(many=True))
    def get(self, key):
        """The pilot's approvals, newest first"""
        pilot = rollout.get_pilot(db.session, key)
        from sqlalchemy import select

        from pilot.models import Approval
        return list(db.session.scalars(select(Approval).where(Approval.pilot_id == pilot.id)
                                       .order_by(Approval.id.desc()).limit(200)))


@blp.route("/<key>/approvals/<int:approval_id>/<any(approve, reject):verdict>")
class ApprovalDecision(MethodView):
    @blp.arguments(DecisionIn)
    @blp.response(200, ApprovalSchema)
    def post(self, data, key, approval_id, verdict):
        """Approve (the action runs now) or reject a pending approval; the requester cannot decide"""
        pilot = rollout.get_pilot(db.session, key)
        approval = governance.get_approval(db.session, pilot, approval_id)
        governance.decide(db.session, current().actor, pilot, approval, verdict, data["reason"])
        db.session.commit()
        return approval
