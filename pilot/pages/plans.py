"""The "Plan" step of a pilot: the plan of a saved pilot or of the pilot form's configuration as it is
being edited (pilot.planner) and, for a store pilot, the proposed stores (pilot.store_selection), one of
which the page applies to the design's stage: a draft's first, a live pilot's next (never the running one)."""
from __future__ import annotations

from flask import flash, g, redirect, render_template, request, url_for
from sqlalchemy import select

from pilot import pilot_drafts, planner, rollout, store_selection
from pilot.db import db
from pilot.errors import PilotError
from pilot.http_errors import status_of
from pilot.models import Programme
from pilot.pages.base import ANALYSTS, bp, login_required
from pilot.pages.pilot_forms import read_form

PAGE_SIMULATIONS = 100  # simulated pilots for the page (the API's default is 200)
EDITORS = ("admin", "manager")
UNSAVED_KEY = "unsaved-plan"  # the key a new pilot's form is planned under when it has none yet


def _design_stage(pilot):
    """The stage a design would be applied to, and why there is none (a live pilot without a next stage)."""
    try:
        return store_selection.design_stage(pilot), None
    except PilotError as exc:
        return None, exc.message


def _render(pilot, problem: str | None = None):
    """The plan page of a saved pilot, its proposed stores on request."""
    options = {"simulations": PAGE_SIMULATIONS, "weeks": request.args.get("weeks", type=int),
               "stage": request.args.get("stage", type=int)}
    plan = designs = None
    stage, no_stage = _design_stage(pilot) if pilot.unit == "store" else (None, None)
    try:
        plan = planner.plan_pilot(db.session, pilot, options)
        size = request.args.get("stores", type=int)
        if stage is not None and size:
            designs = store_selection.propose_pilot(db.session, pilot, size, None,
                                                    {**options, "stage": stage.position})
    except PilotError as exc:
        problem = problem or exc.message
    return render_template("plan.html", pilot=pilot, name=pilot.name, plan=plan, designs=designs, problem=problem,
                           design_stage=stage, no_design_stage=no_stage,
                           can_apply=g.principal.role in EDITORS and stage is not None)


@bp.get("/pilots/<key>/plan")
@login_required(*ANALYSTS)
def plan_page(key: str):
    """The plan of a pilot's stage, with its assumptions; a store pilot's proposed stores on request."""
    return _render(rollout.get_pilot(db.session, key))


@bp.post("/pilots/<key>/plan/apply")
@login_required(*EDITORS)
def plan_apply(key: str):
    """Set the design stage's scope to a proposed design's stores (CSRF-checked); a refusal is the plan page
    with the reason and the refusal's status (409: a running stage, or no stage left to apply it to)."""
    pilot = rollout.get_pilot(db.session, key)
    codes = [c for c in request.form.get("store_codes", "").split(",") if c]
    try:
        stage = store_selection.apply_design(db.session, g.principal.actor, pilot, codes,
                                             request.form.get("stage", type=int))
        db.session.commit()
    except PilotError as exc:
        db.session.rollback()
        return _render(pilot, f"Not applied: {exc.message}"), status_of(exc)
    flash(f"Stage {stage.position} now starts in {len(codes)} stores: {', '.join(codes)}.")
    return redirect(url_for("pages.plan_page", key=key, stage=stage.position))


@bp.post("/pilots/form-plan")
@login_required(*EDITORS)
def plan_form():
    """The plan of the pilot form's configuration as it is now (not saved): its first stage."""
    programme = db.session.scalar(select(Programme).where(Programme.key == request.form.get("programme", "")))
    if programme is None:
        return render_template("plan.html", pilot=None, name="the pilot form", plan=None, designs=None,
                               problem="Choose a programme first.", can_apply=False), 422
    editing = request.form.get("editing")
    pilot = rollout.get_pilot(db.session, editing) if editing else None
    body, problems = read_form(request.form, programme, pilot.key if pilot else None)
    # a plan needs no key (a new pilot's is checked when it is saved) and no name
    body = {**body, "key": pilot.key if pilot else UNSAVED_KEY, "name": body["name"] or "Unsaved pilot"}
    data, checked = pilot_drafts.check_pilot(db.session, body, pilot)
    problems += checked
    plan, problem, status = None, None, 200
    if problems:
        problem = "The form cannot be planned yet: " + " ".join(f"{p['path']}: {p['message']}" for p in problems)
        status = 422
    else:
        try:
            plan = planner.plan_config(db.session, {**data, "stage": 1, "simulations": PAGE_SIMULATIONS, "seed": 0,
                                                    "history_weeks": planner.DEFAULT_HISTORY_WEEKS})
        except PilotError as exc:
            problem, status = exc.message, status_of(exc)
    return render_template("plan.html", pilot=pilot, name=body["name"], plan=plan, designs=None, problem=problem,
                           from_form=True, can_apply=False), status
