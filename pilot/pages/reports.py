"""Analysis report pages: the report (with its drill-down into any metric), its exports — standalone
HTML, PDF, every table as CSV and JSON, reachable with the session or a Bearer token — applying its
recommendation, running an analysis now, and plotly.js for the figures."""
from __future__ import annotations

import json

from flask import Response, abort, current_app, flash, g, redirect, render_template, request, send_file, url_for
from plotly.utils import PlotlyJSONEncoder

import reports
from pilot import analysis_runs, report_evidence, rollout
from pilot.analysis_config import SRM_ALPHA
from pilot.db import db
from pilot.errors import Conflict, PilotError, Unavailable
from pilot.models import AnalysisRun, Pilot
from pilot.pages.base import ANALYSTS, bootstrap_css, bp, commit_or_flash, login_required
from reports.pdf import PdfUnavailable, chromium_path, html_to_pdf


def _run(run_id: int) -> tuple[AnalysisRun, Pilot]:
    run = db.session.get(AnalysisRun, run_id)
    if run is None:
        abort(404)
    return run, db.session.get(Pilot, run.pilot_id)


def _history(runs: list[AnalysisRun]) -> list[dict]:
    """The primary effect of each finished run of the stage up to this one (for the time figure)."""
    return [{"cutoff": e.cutoff.isoformat(), **r} for e in runs for r in report_evidence.primary_rows(e)]


def _safe_json(value) -> str:
    text = json.dumps(value, cls=PlotlyJSONEncoder, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _metric(run: AnalysisRun) -> str:
    """The metric the drill-down shows: `?metric=` when the run has it, else the primary metric."""
    names = [m["metric"] for m in run.results.get("metrics", [])]
    asked = request.args.get("metric")
    return asked if asked in names else (run.config.get("primary_metric") or (names[0] if names else ""))


def _report_context(run: AnalysisRun, pilot: Pilot) -> dict:
    looks = report_evidence.stage_runs(db.session, run)
    metric = _metric(run)
    figs = reports.figures(run.results, _history(looks), metric)
    drill = reports.drill_down(run.results, metric)
    trust = reports.trust_panel(run.results, run.config, len(looks), report_evidence.freshness(db.session, run),
                                SRM_ALPHA)
    stages = report_evidence.stages(db.session, pilot)
    return {"run": run, "pilot": pilot, "results": run.results, "rec": run.recommendation, "figures": figs,
            "figures_json": _safe_json(figs), "tables": list(reports.TABLES), "trust": trust, "drill": drill,
            "metric_names": list(dict.fromkeys(m["metric"] for m in run.results.get("metrics", []))),
            "stages": stages, "styles": reports.arm_styles(run.results),
            "across": report_evidence.across_stages(stages, run.results.get("unit"), run.config.get("alpha", 0.05)),
            "metrics": reports.table(run.results, "metrics"), "power": reports.table(run.results, "power"),
            "economics": reports.table(run.results, "economics"),
            "group_economics": reports.table(run.results, "group_economics")}


def _standalone(run: AnalysisRun, pilot: Pilot, printing: bool = False) -> str:
    return render_template("report.html", standalone=True, printing=printing, can_act=False,
                           plotly_js=reports.plotly_js_path().read_text(encoding="utf-8"),
                           inline_css=bootstrap_css().read_text(encoding="utf-8"),
                           **_report_context(run, pilot))


def _finished(run: AnalysisRun) -> None:
    if run.status != "done":
        raise Conflict(f"Analysis {run.id} is {run.status}; its report exists once it is done.")


@bp.get("/analyses/<int(max=2147483647):run_id>")
@login_required(*ANALYSTS)
def report_page(run_id: int):
    """The report of one analysis: recommendation and reasons first, then trust, figures and tables."""
    run, pilot = _run(run_id)
    if run.status != "done":
        return render_template("report_pending.html", run=run, pilot=pilot)
    can_act = g.principal.role in ("admin", "manager") and pilot.current_stage == run.stage
    return render_template("report.html", standalone=False, printing=False, can_act=can_act,
                           **_report_context(run, pilot))


def _attachment(pilot: Pilot, run: AnalysisRun, suffix: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="pilot-{pilot.key}-analysis-{run.id}{suffix}"'}


@bp.get("/analyses/<int(max=2147483647):run_id>/report.html")
@login_required(*ANALYSTS, bearer=True)
def report_download(run_id: int):
    """The whole report as one standalone HTML file (plotly.js inlined once)."""
    run, pilot = _run(run_id)
    _finished(run)
    return Response(_standalone(run, pilot), mimetype="text/html", headers=_attachment(pilot, run, ".html"))


@bp.get("/analyses/<int(max=2147483647):run_id>/report.pdf")
@login_required(*ANALYSTS, bearer=True)
def report_pdf(run_id: int):
    """The whole report as a PDF, printed by headless Chromium (503 where none is installed)."""
    run, pilot = _run(run_id)
    _finished(run)
    executable = chromium_path(current_app.config.get("CHROMIUM"))
    if executable is None:
        raise Unavailable("PDF export needs Chromium on the server (e.g. Debian's chromium package, or "
                          "PILOT_CHROMIUM set to its path); the standalone HTML report works without it.",
                          code="pdf_unavailable")
    try:
        pdf = html_to_pdf(_standalone(run, pilot, printing=True), executable)
    except PdfUnavailable as exc:
        raise Unavailable(str(exc), code="pdf_unavailable") from None
    return Response(pdf, mimetype="application/pdf", headers=_attachment(pilot, run, ".pdf"))


@bp.get("/analyses/<int(max=2147483647):run_id>/tables/<name>.<any(csv, json):fmt>")
@login_required(*ANALYSTS, bearer=True)
def report_table(run_id: int, name: str, fmt: str):
    """One table of a report as CSV (with its header, even without rows) or JSON."""
    run, pilot = _run(run_id)
    if name not in reports.TABLES:
        abort(404)
    rows = reports.table(run.results, name)
    headers = _attachment(pilot, run, f"-{name}.{fmt}")
    if fmt == "csv":
        return Response(reports.to_csv(rows, reports.COLUMNS[name]), mimetype="text/csv", headers=headers)
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
        run = analysis_runs.run_now_or_later(current_app._get_current_object(), db.session, g.principal.actor, pilot,
                                    None, None)
    except PilotError as exc:
        db.session.rollback()
        flash(f"Not analysed: {exc.message}", "error")
        return redirect(url_for("pages.pilot_page", key=key))
    return redirect(url_for("pages.report_page", run_id=run.id))


@bp.get("/assets/plotly.min.js")
def plotly_js():
    """plotly.js from the installed plotly package: installations often have no internet."""
    response = send_file(reports.plotly_js_path(), mimetype="text/javascript", max_age=86400)
    return response
