"""The overview, the dashboard of pilots, one pilot's page and its lifecycle actions."""
from __future__ import annotations

from flask import (
    Response,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from sqlalchemy import func, select

from pilot import bulk_jobs, governance, rollout
from pilot.assignment import stage_counts
from pilot.assignment_list import check_filters, csv_lines, parse_filters
from pilot.audit_diff import changes
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
                           actions=actions if g.principal.role in ("admin", "manager") else [], analyses=analyses,
                           counts=stage_counts(db.session, pilot), groups=saved_groups(db.session),
                           can_edit=g.principal.role in ("admin", "manager"),
                           progress=bulk_jobs.progress(db.session, pilot), changes=changes)


@bp.get("/pilots/<key>/assignments.csv")
@login_required(*ANALYSTS, bearer=True)
def assignments_csv(key: str):
    """Every assignment of the pilot as CSV (filters as the API's: variant, store, group, since), for the CRM."""
    pilot = rollout.get_pilot(db.session, key)
    filters = parse_filters(request.args)
    check_filters(db.session, pilot, filters)
    return Response(stream_with_context(csv_lines(db.session, pilot, filters)), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{pilot.key}-assignments.csv"'})


@bp.post("/pilots/<key>/<any(start, pause, resume, advance, complete, rollback, cancel):action>")
@login_required("admin", "manager")
def pilot_action(key: str, action: str):
    """Apply a lifecycle action from the pilot page (confirmed in the browser, CSRF-checked)."""
    pilot = rollout.get_pilot(db.session, key)

    def change() -> str:
        reason, override = request.form.get("reason") or None, bool(request.form.get("override"))
        approval = governance.request_action(db.session, g.principal.actor, pilot, action, reason, override)
        if approval is not None:  # the pilot asks a second person (pilot.governance)
            return f"{action.capitalize()} waits for a second person's approval (approval {approval.id})."
        rollout.transition(db.session, g.principal.actor, pilot, action, reason, override=override)
        return f"{action.capitalize()}: the pilot is now {pilot.state}."
    if commit_or_flash(change, "Not done") and action in ("start", "advance") and bulk_jobs.wanted(pilot):
        bulk_jobs.start(current_app._get_current_object(), db.session, pilot)  # the new scope's customers
    return redirect(url_for("pages.pilot_page", key=key))


@bp.post("/pilots/<key>/assign")
@login_required("admin", "manager")
def pilot_assign(key: str):
    """Assign the current stage's eligible customers again, in the background (e.g. after new customers came)."""
    pilot = rollout.get_pilot(db.session, key)
    if not bulk_jobs.wanted(pilot):
        flash("Only a running customer pilot assigns its customers in bulk.", "error")
    elif bulk_jobs.start(current_app._get_current_object(), db.session, pilot, again=True) is not None:
        flash(f"Assigning stage {pilot.current_stage}'s customers in the background.")
    return redirect(url_for("pages.pilot_page", key=key))


@bp.get("/pilots/<key>/assignment-progress")
@login_required(*ANALYSTS)
def assignment_progress(key: str):
    """The background assignment's progress, for the pilot page to poll."""
    found = bulk_jobs.progress(db.session, rollout.get_pilot(db.session, key))
    return jsonify(found or {"status": None})
