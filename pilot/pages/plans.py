"""The "Plan" step of a pilot: its plan before launch (pilot.planner) and, for a store pilot, the
proposed stores (pilot.store_selection), one of which the form applies to the stage's scope."""
from __future__ import annotations

from flask import g, redirect, render_template, request, url_for

from pilot import planner, rollout, store_selection
from pilot.db import db
from pilot.errors import PilotError
from pilot.pages.base import bp, commit_or_flash, login_required

PAGE_SIMULATIONS = 100  # simulated pilots for the page (the API's default is 200)


@bp.get("/pilots/<key>/plan")
@login_required("admin", "manager", "analyst")
def plan_page(key: str):
    """The plan of a pilot's stage, with its assumptions; a store pilot's proposed stores on request."""
    pilot = rollout.get_pilot(db.session, key)
    options = {"simulations": PAGE_SIMULATIONS, "weeks": request.args.get("weeks", type=int)}
    plan = designs = None
    problem = None
    try:
        plan = planner.plan_pilot(db.session, pilot, options)
        size = request.args.get("stores", type=int)
        if pilot.unit == "store" and size:
            designs = store_selection.propose_pilot(db.session, pilot, size, None, options)
    except PilotError as exc:
        problem = exc.message
    return render_template("plan.html", pilot=pilot, plan=plan, designs=designs, problem=problem,
                           can_apply=g.principal.role in ("admin", "manager") and pilot.state == "draft")


@bp.post("/pilots/<key>/plan/apply")
@login_required("admin", "manager")
def plan_apply(key: str):
    """Set the stage's scope to a proposed design's stores (CSRF-checked)."""
    pilot = rollout.get_pilot(db.session, key)
    codes = [c for c in request.form.get("store_codes", "").split(",") if c]
    position = request.form.get("stage", type=int) or 1

    def change() -> str:
        rollout.update_stage(db.session, g.principal.actor, pilot, position,
                             {"store_codes": codes, "region_codes": []})
        return f"Stage {position} now starts in {len(codes)} stores: {', '.join(codes)}."
    commit_or_flash(change, "Not applied")
    return redirect(url_for("pages.plan_page", key=key))
