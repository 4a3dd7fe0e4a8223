"""The guided pilot form: a new pilot or a draft's settings and stages, every problem of a submission shown at
once next to its field; the running stage's weights (the only thing it may change); the live scope counts."""
from __future__ import annotations

import re
from typing import Any

from flask import flash, g, jsonify, redirect, render_template, request, url_for
from sqlalchemy import func, select
from werkzeug.datastructures import MultiDict

from pilot import pilot_drafts, rollout
from pilot.customer_groups import saved_groups
from pilot.db import db
from pilot.errors import PilotError
from pilot.metrics import CATALOGUE
from pilot.models import Programme, Region, Store
from pilot.models.pilots import LIVE_STATES
from pilot.pages.base import bp, commit_or_flash, login_required

EDITORS = ("admin", "manager")
GATE_FLAGS = ("require_significant", "no_guardrail_harm", "no_srm")


@bp.route("/pilots/new", methods=["GET", "POST"])
@login_required(*EDITORS)
def pilot_new():
    """A new draft pilot: first its programme, then the whole form."""
    key = request.values.get("programme")
    programme = db.session.scalar(select(Programme).where(Programme.key == key)) if key else None
    if programme is None:
        programmes = db.session.scalars(select(Programme).order_by(Programme.name)).all()
        return render_template("pilot_start.html", programmes=programmes)
    if request.method == "GET":
        return _render(programme, _fresh(programme), [], None)
    body, problems = read_form(request.form, programme)
    data, checked = pilot_drafts.check_pilot(db.session, body)
    problems += checked
    if not problems:
        try:
            pilot = rollout.create_pilot(db.session, g.principal.actor, programme, data)
            db.session.commit()
        except PilotError as exc:
            db.session.rollback()
            problems = (exc.details or {}).get("errors") or [{"path": "key", "message": exc.message}]
        else:
            flash(f"Draft pilot {pilot.name} saved. Check it, then start it when you are ready.")
            return redirect(url_for("pages.pilot_page", key=pilot.key))
    return _render(programme, request.form, problems, None), 422


@bp.route("/pilots/<key>/edit", methods=["GET", "POST"])
@login_required(*EDITORS)
def pilot_edit(key: str):
    """A draft's whole form (a started pilot changes on its own page: the running stage's weights)."""
    pilot = rollout.get_pilot(db.session, key)
    if pilot.state != "draft":
        flash("A pilot that has started keeps its settings and stages; the running stage's weights can change "
              "on this page.", "error")
        return redirect(url_for("pages.pilot_page", key=key))
    if request.method == "GET":
        return _render(pilot.programme, _stored(pilot), [], pilot)
    body, problems = read_form(request.form, pilot.programme, pilot.key)
    data, checked = pilot_drafts.check_pilot(db.session, body, pilot)
    problems += checked
    if not problems:
        try:
            pilot_drafts.save_draft(db.session, g.principal.actor, pilot, data)
            db.session.commit()
        except PilotError as exc:
            db.session.rollback()
            problems = (exc.details or {}).get("errors") or [{"path": "stages", "message": exc.message}]
        else:
            flash(f"Draft pilot {pilot.name} saved.")
            return redirect(url_for("pages.pilot_page", key=key))
    return _render(pilot.programme, request.form, problems, pilot), 422


@bp.post("/pilots/<key>/weights")
@login_required(*EDITORS)
def pilot_weights(key: str):
    """Change the running stage's weights (customers already assigned keep their variant; logged)."""
    pilot = rollout.get_pilot(db.session, key)
    stage = pilot.stage(pilot.current_stage or 0)
    if stage is None:
        flash("Only a started pilot's current stage takes new weights here.", "error")
        return redirect(url_for("pages.pilot_page", key=key))
    weights, problems = _weights(request.form, "w-", list(stage.allocation), "allocation")
    if problems:
        flash("Not changed: " + " ".join(p["message"] for p in problems), "error")
        return redirect(url_for("pages.pilot_page", key=key))

    def change() -> str:
        rollout.update_stage(db.session, g.principal.actor, pilot, stage.position, {"allocation": weights})
        return f"Stage {stage.position} now assigns new customers with the new weights."
    commit_or_flash(change, "Not changed")
    return redirect(url_for("pages.pilot_page", key=key))


@bp.post("/pilots/form-preview")
@login_required(*EDITORS)
def pilot_form_preview():
    """The form's live numbers: per stage its stores, customers and eligible customers, the weights' total,
    and live pilots of another layer in its stores."""
    programme = db.session.scalar(select(Programme).where(Programme.key == request.form.get("programme", "")))
    if programme is None:
        return jsonify({"outputs": []})
    body, _problems = read_form(request.form, programme)
    outputs = []
    for i, stage in zip(_indices(request.form), body["stages"]):
        counts = pilot_drafts.scope_counts(db.session, stage["store_codes"], stage["region_codes"],
                                           stage["eligible_groups"])
        total = sum(w for w in stage["allocation"].values() if isinstance(w, float)) * 100
        conflicts = pilot_drafts.layer_conflicts(db.session, body.get("layer") or "default", stage["store_codes"],
                                                 stage["region_codes"], request.form.get("editing"))
        outputs += [
            {"selector": f"#s-{i}-count", "text": f"{counts['stores']:,} stores, {counts['customers']:,} customers "
                                                 f"with their home store there, {counts['eligible']:,} of them "
                                                 "in the eligible groups."},
            {"selector": f"#s-{i}-total", "text": f"{total:.4g}%" + (" ✓" if abs(total - 100) < 1e-6 else
                                                                     " — must be 100%")},
            {"selector": f"#s-{i}-layer", "text": " ".join(
                f"Pilot {c['pilot']} (layer {c['layer']}) is live in {c['stores']} of these stores: its customers "
                f"could get both programmes. Use layer {c['layer']} to keep them apart." for c in conflicts)}]
    return jsonify({"outputs": outputs})


def _indices(form: MultiDict) -> list[int]:
    return sorted({int(m.group(1)) for n in form if (m := re.fullmatch(r"s-(\d+)-name", n))})


def _number(form: MultiDict, name: str, path: str, problems: list, percent: bool = False, whole: bool = False):
    text = form.get(name, "").strip().rstrip("%").replace(",", ".")
    if not text:
        return None
    try:
        value = int(text) if whole else float(text)
    except ValueError:
        problems.append({"path": path, "message": "Type a whole number." if whole else "Type a number."})
        return None
    return value / 100 if percent else value


def _weights(form: MultiDict, prefix: str, variants: list[str], path: str, out: str | None = None
             ) -> tuple[dict[str, float], list]:
    """The weights typed (as shares), and the problems; `out`: the prefix of a draft stage's "leave out"
    boxes (a variant left out is not in the allocation)."""
    problems: list[dict[str, str]] = []
    weights = {}
    for v in variants:
        if out and form.get(f"{out}{v}"):
            continue  # left out of this stage (a draft's): not in its allocation
        value = _number(form, f"{prefix}{v}", f"{path}.{v}", problems, percent=True)
        weights[v] = 0.0 if value is None else value
    if not problems and abs(sum(weights.values()) - 1) > 1e-9:
        problems.append({"path": path, "message": f"The weights add up to {sum(weights.values()) * 100:.4g}%; "
                                                  "they must add up to 100%."})
    return weights, problems


def read_form(form: MultiDict, programme: Programme, key: str | None = None) -> tuple[dict[str, Any], list]:
    """The form as the body POST /api/v1/pilots takes, and the problems of reading its numbers."""
    problems: list[dict[str, str]] = []
    body: dict[str, Any] = {"key": key or form.get("key", "").strip(), "name": form.get("name", "").strip(),
                            "programme": programme.key, "unit": form.get("unit", "customer"),
                            "layer": form.get("layer", "").strip() or "default",
                            "primary_metric": form.get("primary_metric", "spend_per_customer"),
                            "guardrails": []}
    for metric in CATALOGUE:
        if form.get(f"g-{metric}"):
            harm = _number(form, f"gh-{metric}", "guardrails", problems, percent=True)
            body["guardrails"].append({"metric": metric, "max_harm": harm or 0.0})
    for name in ("alpha", "power", "mde", "margin_rate"):
        value = _number(form, name, name, problems, percent=name in ("mde", "margin_rate"))
        if value is not None:
            body[name] = value
    variants = [v.key for v in programme.variants]
    body["stages"] = []
    for pos, i in enumerate(_indices(form)):
        p, path = f"s-{i}-", f"stages[{pos}]"
        weights, weight_problems = _weights(form, f"{p}w-", variants, f"{path}.allocation", f"{p}out-")
        problems += [w for w in weight_problems if w["path"] != f"{path}.allocation"]  # the total: the domain's
        gate: dict[str, Any] = {flag: bool(form.get(f"{p}gate-{flag}")) for flag in GATE_FLAGS}
        for name, whole in (("min_days", True), ("min_units_per_arm", True), ("min_roi", False)):
            value = _number(form, f"{p}gate-{name}", f"{path}.gate.{name}", problems, whole=whole)
            if value is not None:
                gate[name] = value
        groups = form.getlist(f"{p}group")
        body["stages"].append({
            "name": form.get(f"{p}name", "").strip() or f"Stage {pos + 1}",
            "region_codes": form.getlist(f"{p}region"), "store_codes": form.getlist(f"{p}store"),
            "allocation": {k: w for k, w in weights.items()}, "eligible_groups": groups or None,
            "planned_start": form.get(f"{p}start") or None, "planned_end": form.get(f"{p}end") or None,
            "gate": gate})
    return body, problems


def _fresh(programme: Programme) -> MultiDict:
    """A new pilot's form: the API's defaults, equal weights, one stage."""
    share = round(100 / len(programme.variants), 2)
    rest = round(100 - share * (len(programme.variants) - 1), 2)  # the control takes what rounding left over
    control = next((v.key for v in programme.variants if v.mechanic == "control"), programme.variants[0].key)
    gate = rollout.default_gate("customer")
    values = [("unit", "customer"), ("layer", pilot_drafts.layers(db.session)[0]),
              ("primary_metric", "spend_per_customer"), ("alpha", "0.05"), ("power", "0.8"), ("mde", "2"),
              ("margin_rate", "30"), ("s-0-name", "Stage 1")]
    values += [(f"s-0-w-{v.key}", f"{rest if v.key == control else share:g}") for v in programme.variants]
    values += _gate_values(0, gate)
    return MultiDict(values)


def _gate_values(i: int, gate: dict[str, Any]) -> list[tuple[str, str]]:
    out = [(f"s-{i}-gate-{n}", f"{gate[n]:g}") for n in ("min_days", "min_units_per_arm", "min_roi") if n in gate]
    return out + [(f"s-{i}-gate-{f}", "on") for f in GATE_FLAGS if gate.get(f)]


def _stored(pilot) -> MultiDict:
    """A draft's form as stored."""
    values = [("name", pilot.name), ("unit", pilot.unit), ("layer", pilot.layer),
              ("primary_metric", pilot.primary_metric), ("alpha", f"{pilot.alpha:g}"), ("power", f"{pilot.power:g}"),
              ("mde", f"{pilot.mde * 100:.6g}"), ("margin_rate", f"{pilot.margin_rate * 100:.6g}")]
    for gr in pilot.guardrails:
        values += [(f"g-{gr['metric']}", "on"), (f"gh-{gr['metric']}", f"{gr['max_harm'] * 100:.6g}")]
    for i, s in enumerate(pilot.stages):
        values += [(f"s-{i}-name", s.name), (f"s-{i}-start", str(s.planned_start or "")),
                   (f"s-{i}-end", str(s.planned_end or ""))]
        values += [(f"s-{i}-region", c) for c in s.region_codes] + [(f"s-{i}-store", c) for c in s.store_codes]
        values += [(f"s-{i}-group", c) for c in s.eligible_groups or []]
        values += [(f"s-{i}-w-{k}", f"{w * 100:.6g}") for k, w in s.allocation.items()]
        values += [(f"s-{i}-out-{v.key}", "on") for v in pilot.programme.variants if v.key not in s.allocation]
        values += _gate_values(i, s.gate or {})
    return MultiDict(values)


def _render(programme: Programme, values: MultiDict, problems: list[dict[str, str]], pilot):
    by_path: dict[str, list[str]] = {}
    for p in problems:
        by_path.setdefault(p["path"], []).append(p["message"])
    regions = db.session.execute(select(Region.code, Region.name, func.count(Store.id)).outerjoin(Store)
                                 .group_by(Region.code, Region.name).order_by(Region.name)).all()
    stores = db.session.execute(select(Store.code, Store.name, Region.name).join(Region)
                                .order_by(Region.name, Store.code)).all()
    indices = _indices(values) or [0]
    return render_template("pilot_form.html", programme=programme, values=values, problems=problems,
                           by_path=by_path, pilot=pilot, regions=regions, stores=stores,
                           groups=saved_groups(db.session),
                           metrics=CATALOGUE, layers=pilot_drafts.layers(db.session), indices=indices,
                           customer_gate=rollout.default_gate("customer"), store_gate=rollout.default_gate("store"),
                           live_states=LIVE_STATES)
