"""Metrics in the workspace: the built-in catalogue and the defined metrics, each in plain words, and a form
that defines or changes one (read-only, with the reason, while a live pilot measures it)."""
from __future__ import annotations

from typing import Any

from flask import flash, g, redirect, render_template, request, url_for
from werkzeug.datastructures import MultiDict

from pilot import metric_definitions as md
from pilot.db import db
from pilot.errors import NotFound, PilotError, field_paths
from pilot.metric_spec import AGGREGATIONS, DIRECTIONS, EVENT_FIELDS, KINDS, SOURCES, TRANSACTION_FIELDS, Measure
from pilot.metrics import CATALOGUE
from pilot.pages.base import ANALYSTS, bp, login_required

EDITORS = ("admin", "manager")
NEW = {"kind": "mean", "good_direction": "up", "source": "events", "aggregation": "count"}
PARTS = {"measure": "", "numerator": "numerator.", "denominator": "denominator."}
SHOWN_TYPES = ("survey_nps", "app_session", "referral", "complaint_opened", "complaint_resolved",
               "points_redeemed", "review", "email_open")


def _rows(m: Measure) -> str:
    if m.source == "transactions":
        kind = m.filters.get("type")
        what = f"{kind}s" if kind else "transactions"
        where = {k: v for k, v in m.filters.items() if k != "type"}
    else:
        what, where = f"‘{m.type}’ events", m.filters
    if where:
        what += " where " + " and ".join(f"{k} is {v}" for k, v in where.items())
    if m.value_at_least is not None:
        what += f" with a value of at least {m.value_at_least:g}"
    return what


def measure_words(m: Measure) -> str:
    """A measure in plain words, per customer over the analysis window."""
    rows = _rows(m)
    return {"count": f"the number of {rows}", "sum": f"the sum of {m.field} over {rows}",
            "max": f"the largest {m.field} of {rows}", "last": f"the latest {m.field} of {rows}",
            "any": f"whether the customer has any {rows}",
            "nps": f"the customer's last answer of {rows} scored +100 (9-10), 0 (7-8) or −100 (0-6)"}[m.aggregation]


def plain(metric: md.DefinedMetric) -> str:
    """What a defined metric measures, in a sentence."""
    if metric.kind == "ratio":
        text = (f"Over each arm: {measure_words(metric.numerator)} ÷ {measure_words(metric.denominator)}, "
                "summed over its customers.")
    elif metric.kind == "proportion":
        text = f"Share of customers with {_rows(metric.measure)}."
    else:
        text = f"Mean per customer of {measure_words(metric.measure)}."
    return text + (" Adjusted by the same measure over the pre-period (CUPED)." if metric.covariate else "")


@bp.get("/metrics")
@login_required(*ANALYSTS)
def metrics():
    """Every metric a pilot can measure: built in, then defined, in plain words."""
    defined = [(m, plain(m), [p.key for p in md.pilots_using(db.session, m.key)]) for m in md.all_current(db.session)]
    return render_template("metrics.html", built_in=list(CATALOGUE.values()), defined=defined,
                           can_edit=g.principal.role in EDITORS)


@bp.route("/metrics/new", methods=["GET", "POST"])
@login_required(*EDITORS)
def metric_new():
    """The form for a new metric."""
    return _form(None)


@bp.route("/metrics/<key>", methods=["GET", "POST"])
@login_required(*ANALYSTS)
def metric_page(key: str):
    """A defined metric's form: editable by managers unless a live pilot measures it."""
    metric = md.current(db.session, key)
    if metric is None:
        raise NotFound(f"No defined metric {key!r} (built-in metrics are listed on the metrics page).")
    return _form(metric)


def _form(metric: md.DefinedMetric | None):
    live = [p.key for p in md.pilots_using(db.session, metric.key)] if metric else []
    locked = None if g.principal.role in EDITORS else "Read only: only managers and admins change metrics."
    if live:
        locked = (f"Read only: live pilots measure it ({', '.join(live)}) and their analysis plans locked when "
                  "they started. Change it as a plan amendment with a reason (PATCH /api/v1/metrics/"
                  f"{metric.key} with a reason).")
    if request.method == "GET" or locked:
        state = _state(metric.body() if metric else NEW)
        return _render(state, metric, [], locked)
    body = read_form(request.form)
    try:
        if metric is None:
            saved = md.define(db.session, g.principal.actor, body)
        else:
            saved = md.redefine(db.session, g.principal.actor, metric.key, {**body, "key": metric.key})
        db.session.commit()
    except PilotError as exc:
        db.session.rollback()
        errors = field_paths(exc.details["fields"]) if "fields" in exc.details else [{"path": "key",
                                                                                       "message": exc.message}]
        return _render(_state(body), metric, errors, None), 422
    flash(f"Metric {saved.name} saved (version {saved.version}).")
    return redirect(url_for("pages.metrics"))


def _state(body: dict[str, Any]) -> dict[str, Any]:
    """A definition as the form shows it: each measure's fields, filters as name=value lines."""
    def part(m: dict[str, Any] | None) -> dict[str, Any]:
        m = dict(m or {})
        m["filters"] = "\n".join(f"{k}={v}" for k, v in (m.get("filters") or {}).items())
        return m
    top = {k: body.get(k) for k in ("key", "name", "description", "good_direction", "kind", "covariate")}
    return {**top, "measure": part({k: body.get(k) for k in ("source", "type", "filters", "aggregation", "field",
                                                              "value_at_least")}),
            "numerator": part(body.get("numerator")), "denominator": part(body.get("denominator"))}


def _measure(form: MultiDict, prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("source", "type", "aggregation", "field"):
        value = form.get(f"{prefix}{name}", "").strip()
        if value:
            out[name] = value
    at_least = form.get(f"{prefix}value_at_least", "").strip()
    if at_least:
        try:
            out["value_at_least"] = float(at_least)
        except ValueError:
            out["value_at_least"] = at_least  # the check names it
    lines = [line.strip() for line in form.get(f"{prefix}filters", "").splitlines() if line.strip()]
    if lines:
        out["filters"] = dict(line.split("=", 1) if "=" in line else (line, "") for line in lines)
        out["filters"] = {k.strip(): v.strip() for k, v in out["filters"].items()}
    return out


def read_form(form: MultiDict) -> dict[str, Any]:
    """The form as the API's body: the single measure, or a ratio's numerator and denominator."""
    body: dict[str, Any] = {k: form.get(k, "").strip() for k in ("key", "name", "description", "good_direction",
                                                                "kind") if form.get(k, "").strip()}
    body["covariate"] = form.get("covariate") == "on"
    if body.get("kind") == "ratio":
        body["numerator"], body["denominator"] = _measure(form, "numerator."), _measure(form, "denominator.")
    else:
        body.update(_measure(form, ""))
    return body


def _render(state: dict[str, Any], metric, errors: list[dict[str, str]], locked: str | None):
    by_path: dict[str, list[str]] = {}
    for e in errors:
        by_path.setdefault(e["path"], []).append(e["message"])
    # the usual types and those defined metrics count (a DISTINCT over millions of events would be slow)
    types = sorted(set(SHOWN_TYPES) | {m.type for d in md.all_current(db.session)
                                       for m in (d.measure, d.numerator, d.denominator) if m and m.type})
    return render_template("metric_form.html", state=state, metric=metric, errors=errors, by_path=by_path,
                           locked=locked, parts=PARTS, kinds=KINDS, directions=DIRECTIONS, sources=SOURCES,
                           aggregations=AGGREGATIONS, fields=sorted(set(EVENT_FIELDS) | set(TRANSACTION_FIELDS)),
                           event_types=types, versions=md.versions(db.session, metric.key) if metric else [],
                           plain=plain(metric) if metric else None)
