"""The pilot page's governance block: pending approvals (approve or reject) and the analysis plan's
versions with an amendment form."""
from __future__ import annotations

from flask import g, redirect, request, url_for

from pilot import governance, rollout
from pilot.db import db
from pilot.errors import Invalid
from pilot.pages.base import bp, commit_or_flash, login_required


@bp.app_template_global()
def pending_approvals(pilot) -> list:
    """The pilot's approvals still waiting (for the _approvals.html block)."""
    return governance.pending(db.session, pilot)


@bp.post("/pilots/<key>/approvals/<int:approval_id>/<any(approve, reject):verdict>")
@login_required("admin", "manager")
def decide_approval(key: str, approval_id: int, verdict: str):
    """Approve (the action runs now) or reject a pending approval; never one's own request."""
    pilot = rollout.get_pilot(db.session, key)

    def change() -> str:
        approval = governance.get_approval(db.session, pilot, approval_id)
        governance.decide(db.session, g.principal.actor, pilot, approval, verdict, request.form.get("reason") or None)
        return f"Approval {approval_id} {approval.status}; the pilot is {pilot.state}."
    commit_or_flash(change, "Not done")
    return redirect(url_for("pages.pilot_page", key=key))


@bp.app_template_global()
def analysis_plan_versions(pilot) -> list:
    """The pilot's analysis plan versions (for the _approvals.html block)."""
    return governance.plan_versions(db.session, pilot)


@bp.post("/pilots/<key>/analysis-plan/amend")
@login_required("admin", "manager")
def amend_plan(key: str):
    """Amend a started pilot's analysis plan with a reason (the MDE, α or power): a new plan version."""
    pilot = rollout.get_pilot(db.session, key)

    def change() -> str:
        changes = {}
        for field, scale in (("mde", 100), ("alpha", 1), ("power", 1)):
            text = (request.form.get(field) or "").strip()
            if text:
                try:
                    changes[field] = float(text) / scale
                except ValueError:
                    raise Invalid(f"{field} must be a number.", details={"fields": {field: ["Not a number."]}}) \
                        from None
        plan = governance.amend_plan(db.session, g.principal.actor, pilot, changes, request.form.get("reason") or "")
        return f"Analysis plan amended: version {plan.version}."
    commit_or_flash(change, "Not amended")
    return redirect(url_for("pages.pilot_page", key=key))
