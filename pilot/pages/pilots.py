"""The overview, the dashboard of pilots, one pilot's page and its lifecycle actions."""
from __future__ import annotations

from flask import g, redirect, render_template, request, url_for
from sqlalchemy import func, select

from pilot import rollout
from pilot.customer_groups import preview, saved_groups
from pilot.db import db, utcnow
from pilot.mechanics import describe
from pilot.models import AnalysisRun, AuditEvent, Customer, CustomerGroup, Pilot, Region, Store
from pilot.pages.base import ANALYSTS, bp, commit_or_flash, login_required


@bp.get("/")
@login_required(*ANALYSTS)
def index():
    """Overview: regions, stores, customers and the customer groups."""
    count = lambda model: db.session.scalar(select(func.count()).select_from(model))  # noqa: E731
    totals = {"regions": count(Region), "stores": count(Store), "customers": count(Customer),
              "groups": count(CustomerGroup)}
    groups = saved_groups(db.session)
    live = db.session.scalars(select(Pilot).where(Pilot.state.in_(("running", "paused"))).order_by(Pilot.id)).all()
    return render_template("index.html", totals=totals, groups=groups, counts=preview(db.session, groups)["counts"],
                           pilots=live, latest=_latest_runs(), now=utcnow())


@bp.get("/pilots")
@login_required(*ANALYSTS)
def pilots():
    """The dashboard of pilots: state, stage, latest recommendation, days running."""
    rows = db.session.scalars(select(Pilot).order_by(Pilot.id.desc())).all()
    return render_template("pilots.html", pilots=rows, latest=_latest_runs(), now=utcnow())


def _latest_runs() -> dict[int, AnalysisRun]:
    """The newest finished run of each pilot."""
    newest = select(AnalysisRun.pilot_id, func.max(AnalysisRun.id).label("id")).where(
        AnalysisRun.status == "done").group_by(AnalysisRun.pilot_id).subquery()
    return {r.pilot_id: r for r in db.session.scalars(select(AnalysisRun).join(newest, newest.c.id == AnalysisRun.id))}


@bp.get("/pilots/<key>")
@login_required(*ANALYSTS)
def pilot_page(key: str):
    """One pilot: configuration, stages, timeline, enrolled stores by region."""
    pilot = rollout.get_pilot(db.session, key)
    enrolments = rollout.active_enrolments(db.session, pilot)
    by_region: dict[str, list] = {}
    for e in sorted(enrolments, key=lambda e: (e.store.region.name, e.store.code)):
        by_region.setdefault(e.store.region.name, []).append(e)
    timeline = db.session.scalars(select(AuditEvent).where(
        ((AuditEvent.entity_type == "pilot") & (AuditEvent.entity_id == pilot.key))
        | ((AuditEvent.entity_type == "stage") & AuditEvent.entity_id.startswith(f"{pilot.key}/", autoescape=True)))
        .order_by(AuditEvent.id)).all()
    variants = {v.key: (v, describe(v.mechanic, v.parameters)) for v in pilot.programme.variants}
    actions = [a for a, allowed in rollout.TRANSITIONS.items() if pilot.state in allowed and a != "start"
               or a == "start" and pilot.state == "draft"]
    analyses = db.session.scalars(select(AnalysisRun).where(AnalysisRun.pilot_id == pilot.id)
                                  .order_by(AnalysisRun.id.desc()).limit(50)).all()
    return render_template("pilot.html", pilot=pilot, by_region=by_region, timeline=timeline, variants=variants,
                           actions=actions if g.principal.role in ("admin", "manager") else [], analyses=analyses)


@bp.post("/pilots/<key>/<any(start, pause, resume, advance, complete, rollback, cancel):action>")
@login_required("admin", "manager")
def pilot_action(key: str, action: str):
    """Apply a lifecycle action from the pilot page (confirmed in the browser, CSRF-checked)."""
    pilot = rollout.get_pilot(db.session, key)

    def change() -> str:
        rollout.transition(db.session, g.principal.actor, pilot, action, request.form.get("reason") or None)
        return f"{action.capitalize()}: the pilot is now {pilot.state}."
    commit_or_flash(change, "Not done")
    return redirect(url_for("pages.pilot_page", key=key))
