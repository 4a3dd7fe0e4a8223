"""HTML pages: token login into a signed HttpOnly session cookie, CSRF-checked forms."""
from __future__ import annotations

import json
import secrets
from functools import wraps

from flask import (Blueprint, Flask, Response, abort, current_app, flash, g, redirect, render_template, request,
                   send_file, session, url_for)
from plotly.utils import PlotlyJSONEncoder
from sqlalchemy import func, select

import reports
from pilot import rollout, runs
from pilot.auth import Principal, principal_by_id, principal_for
from pilot.catalog import get_store
from pilot.db import db, utcnow
from pilot.errors import ApiError
from pilot.mechanics import describe
from pilot.models import AnalysisRun, AuditEvent, Customer, CustomerGroup, Pilot, Region, Store
from pilot.segments import preview, saved_groups

bp = Blueprint("pages", __name__, template_folder="templates")


def csrf_token() -> str:
    """The session's CSRF token, made on first use."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def _check_csrf() -> None:
    sent = request.form.get("csrf_token", "")
    if not sent or not secrets.compare_digest(sent, session.get("csrf", "")):
        abort(400, "The form's CSRF token is missing or wrong; reload the page and try again.")


def login_required(*roles: str):
    """Views behind a login; with roles, only those roles."""
    def decorate(view):
        @wraps(view)
        def wrapped(*args, **kwargs):
            principal = principal_by_id(db.session, session["token_id"]) if "token_id" in session else None
            if principal is None:
                session.pop("token_id", None)
                return redirect(url_for("pages.login", next=request.path))
            if roles and principal.role not in roles:
                abort(403)
            g.principal = principal
            return view(*args, **kwargs)
        return wrapped
    return decorate


@bp.before_app_request
def _csrf_on_forms() -> None:
    if request.method == "POST" and request.blueprint == "pages":
        _check_csrf()


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Log in with an API token."""
    error = None
    if request.method == "POST":
        principal: Principal | None = principal_for(db.session, request.form.get("token", "").strip())
        if principal is not None:
            session.clear()
            session["token_id"] = principal.token_id
            target = request.args.get("next", "")
            home = url_for("pages.own_store" if principal.role == "store" else "pages.index")
            return redirect(target if target.startswith("/") and not target.startswith("//") else home)
        error = "That token is unknown or revoked."
    return render_template("login.html", error=error), 401 if error else 200


@bp.post("/logout")
def logout():
    """Forget the login."""
    session.clear()
    return redirect(url_for("pages.login"))


@bp.get("/")
@login_required("admin", "manager", "analyst")
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
@login_required("admin", "manager", "analyst")
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
@login_required("admin", "manager", "analyst")
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
    try:
        rollout.transition(db.session, g.principal.actor, pilot, action, request.form.get("reason") or None)
        db.session.commit()
        flash(f"{action.capitalize()}: the pilot is now {pilot.state}.")
    except ApiError as exc:
        db.session.rollback()
        flash(f"Not done: {exc.description}", "error")
    return redirect(url_for("pages.pilot_page", key=key))


@bp.get("/store")
@login_required("store")
def own_store():
    """A store's own status page."""
    return store_page(g.principal.store_code)


@bp.get("/stores/<code>")
@login_required("admin", "manager", "analyst", "store")
def store_page(code: str):
    """What a store takes part in, readable on a phone."""
    if g.principal.role == "store" and g.principal.store_code != code:
        abort(403)
    store = get_store(db.session, code)
    return render_template("store.html", store=store, pilots=rollout.store_status(db.session, store))


def init_app(app: Flask) -> None:
    """Register the pages and the CSRF helper for templates."""
    app.jinja_env.globals["csrf_token"] = csrf_token
    app.register_blueprint(bp)


# -- analysis reports ---------------------------------------------------------------------------

ANALYSTS = ("admin", "manager", "analyst")


def _run(run_id: int) -> tuple[AnalysisRun, Pilot]:
    run = db.session.get(AnalysisRun, run_id)
    if run is None:
        abort(404)
    return run, db.session.get(Pilot, run.pilot_id)


def _history(run: AnalysisRun) -> list[dict]:
    """The primary effect of each finished run of the same stage up to this one (for the time figure)."""
    earlier = db.session.scalars(select(AnalysisRun).where(
        AnalysisRun.pilot_id == run.pilot_id, AnalysisRun.stage == run.stage, AnalysisRun.status == "done",
        AnalysisRun.cutoff <= run.cutoff).order_by(AnalysisRun.cutoff, AnalysisRun.id)).all()
    keys = ("effect_rel", "ci_rel_low", "ci_rel_high", "seq_ci_rel_low", "seq_ci_rel_high")
    return [{"arm": r["arm"], "cutoff": e.cutoff.isoformat(), **{k: r.get(k) for k in keys}}
            for e in earlier for r in e.results.get("metrics", [])
            if r.get("role") == "primary" and r.get("method") != "ancova"]


def _safe_json(value) -> str:  # noqa: ANN001
    text = json.dumps(value, cls=PlotlyJSONEncoder, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _report_context(run: AnalysisRun, pilot: Pilot) -> dict:
    figs = reports.figures(run.results, _history(run))
    return {"run": run, "pilot": pilot, "results": run.results, "rec": run.recommendation, "figures": figs,
            "figures_json": _safe_json(figs), "tables": list(reports.TABLES),
            "metrics": reports.table(run.results, "metrics"), "power": reports.table(run.results, "power"),
            "economics": reports.table(run.results, "economics")}


@bp.get("/analyses/<int(max=2147483647):run_id>")
@login_required(*ANALYSTS)
def report_page(run_id: int):
    """The report of one analysis: recommendation and reasons first, then figures and tables."""
    run, pilot = _run(run_id)
    if run.status != "done":
        return render_template("report_pending.html", run=run, pilot=pilot)
    can_act = g.principal.role in ("admin", "manager") and pilot.current_stage == run.stage
    return render_template("report.html", standalone=False, can_act=can_act, **_report_context(run, pilot))


@bp.get("/analyses/<int(max=2147483647):run_id>/report.html")
@login_required(*ANALYSTS)
def report_download(run_id: int):
    """The whole report as one standalone HTML file (plotly.js inlined once)."""
    run, pilot = _run(run_id)
    if run.status != "done":
        abort(409)
    html = render_template("report.html", standalone=True, can_act=False,
                           plotly_js=reports.plotly_js_path().read_text(encoding="utf-8"),
                           **_report_context(run, pilot))
    return Response(html, mimetype="text/html", headers={
        "Content-Disposition": f'attachment; filename="pilot-{pilot.key}-analysis-{run.id}.html"'})


@bp.get("/analyses/<int(max=2147483647):run_id>/tables/<name>.<any(csv, json):fmt>")
@login_required(*ANALYSTS)
def report_table(run_id: int, name: str, fmt: str):
    """One table of a report as CSV or JSON."""
    run, pilot = _run(run_id)
    if name not in reports.TABLES:
        abort(404)
    rows = reports.table(run.results, name)
    filename = f"pilot-{pilot.key}-analysis-{run.id}-{name}.{fmt}"
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    if fmt == "csv":
        return Response(reports.to_csv(rows), mimetype="text/csv", headers=headers)
    return Response(json.dumps(rows, indent=1), mimetype="application/json", headers=headers)


@bp.post("/analyses/<int(max=2147483647):run_id>/apply")
@login_required("admin", "manager")
def report_apply(run_id: int):
    """Apply the run's recommendation (confirmed in the browser, CSRF-checked, audited)."""
    run, pilot = _run(run_id)
    try:
        out = runs.apply(db.session, g.principal.actor, run)
        db.session.commit()
        flash(f"Applied {out['applied'].get('type')}: the pilot is {out['state']}, stage {out['current_stage']}.")
    except ApiError as exc:
        db.session.rollback()
        flash(f"Not applied: {exc.description}", "error")
    return redirect(url_for("pages.report_page", run_id=run_id))


@bp.post("/pilots/<key>/analyse")
@login_required(*ANALYSTS)
def pilot_analyse(key: str):
    """Run an analysis of the pilot's current stage now and open its report."""
    pilot = rollout.get_pilot(db.session, key)
    try:
        run = runs.run_now_or_later(current_app._get_current_object(), db.session, g.principal.actor, pilot,
                                    None, None)
    except ApiError as exc:
        db.session.rollback()
        flash(f"Not analysed: {exc.description}", "error")
        return redirect(url_for("pages.pilot_page", key=key))
    return redirect(url_for("pages.report_page", run_id=run.id))


@bp.get("/assets/plotly.min.js")
def plotly_js():
    """plotly.js from the installed plotly package: installations often have no internet."""
    response = send_file(reports.plotly_js_path(), mimetype="text/javascript", max_age=86400)
    return response
