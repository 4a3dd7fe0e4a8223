"""Analysis report pages: the report, its standalone HTML and table exports, applying its
recommendation, running an analysis now, and plotly.js for the figures."""
from __future__ import annotations

import json

from flask import Response, abort, current_app, flash, g, redirect, render_template, send_file, url_for
from plotly.utils import PlotlyJSONEncoder
from sqlalchemy import select

import reports
from pilot import analysis_runs, rollout
from pilot.db import db
from pilot.errors import PilotError
from pilot.models import AnalysisRun, Pilot
from pilot.pages.base import ANALYSTS, bp, commit_or_flash, login_required


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


def _safe_json(value) -> str:
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
    run, _ = _run(run_id)

    def change() -> str:
        out = analysis_runs.apply(db.session, g.principal.actor, run)
        return f"Applied {out['applied'].get('type')}: the pilot is {out['state']}, stage {out['current_stage']}."
    commit_or_flash(change, "Not applied")
    return redirect(url_for("pages.report_page", run_id=run_id))


@bp.post("/pilots/<key>/analyse")
@login_required(*ANALYSTS)
def pilot_analyse(key: str):
    """Run an analysis of the pilot's current stage now and open its report."""
    pilot = rollout.get_pilot(db.session, key)
    try:
        run = analysis_runs.request_run(db.session, g.principal.actor, pilot, None, None)
        db.session.commit()
    except PilotError as exc:
        db.session.rollback()
        flash(f"Not analysed: {exc.message}", "error")
        return redirect(url_for("pages.pilot_page", key=key))
    run = analysis_runs.launch(current_app._get_current_object(), db.session, run)
    return redirect(url_for("pages.report_page", run_id=run.id))


@bp.get("/assets/plotly.min.js")
def plotly_js():
    """plotly.js from the installed plotly package: installations often have no internet."""
    response = send_file(reports.plotly_js_path(), mimetype="text/javascript", max_age=86400)
    return response
