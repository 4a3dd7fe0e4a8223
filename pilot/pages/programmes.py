"""Programmes in the browser: the list, a form per programme whose variants' inputs come from the
mechanics' parameter schemas, and the live "at the till" preview of what the form says."""
from __future__ import annotations

import re
from typing import Any

import marshmallow as ma
from flask import flash, g, jsonify, redirect, render_template, request, url_for
from sqlalchemy import select
from werkzeug.datastructures import MultiDict

from pilot import programmes as domain
from pilot.db import db
from pilot.errors import PilotError, field_paths
from pilot.mechanic_fields import all_specs, field_specs, read_parameters
from pilot.mechanics import MECHANICS, describe
from pilot.models import Programme
from pilot.pages.base import ANALYSTS, bp, login_required
from pilot.setup_schemas import ProgrammeIn

MECHANIC_NAMES = {"control": "Control: business as usual", "fixed_discount": "Fixed discount card",
                  "personal_card": "Personal card with personal offers", "tiered": "Tiers (silver / gold / …)",
                  "progressive_discount": "Discount growing with the basket", "cumulative_bonus": "Bonus points",
                  "preferred_service": "Preferred service", "gifts_lottery": "Gifts and lottery",
                  "private_access": "Members-only access", "club_membership": "Club membership"}
EDITORS = ("admin", "manager")


@bp.get("/programmes")
@login_required(*ANALYSTS)
def programmes():
    """Every programme with its variants and whether a live pilot uses it."""
    rows = db.session.scalars(select(Programme).order_by(Programme.key)).all()
    live = {p.key: domain.live_pilots_of(db.session, p) for p in rows}
    return render_template("programmes.html", programmes=rows, live=live, describe=describe,
                           can_edit=g.principal.role in EDITORS)


@bp.route("/programmes/new", methods=["GET", "POST"])
@login_required(*EDITORS)
def programme_new():
    """A form for a new programme and its variants."""
    if request.method == "GET":
        state = {"key": "", "name": "", "description": "", "variants": [
            _variant_state("control", "Control", "control", {}), _variant_state("", "", "fixed_discount", {})]}
        return _form(state, [], None)
    state, data, errors = read_form(request.form)
    if not errors:
        try:
            programme = domain.create_programme(db.session, g.principal.actor, data)
            db.session.commit()
        except PilotError as exc:
            db.session.rollback()
            errors = _domain_errors(exc, "key")
        else:
            flash(f"Programme {programme.name} created with {len(programme.variants)} variants.")
            return redirect(url_for("pages.programme_page", key=programme.key))
    return _form(state, errors, None), 422


@bp.route("/programmes/<key>", methods=["GET", "POST"])
@login_required(*ANALYSTS)
def programme_page(key: str):
    """A programme's form: editable by managers while no live pilot uses it, else read-only with the reason."""
    programme = domain.get_programme(db.session, key)
    live = domain.live_pilots_of(db.session, programme)
    if request.method == "GET":
        return _form(_stored_state(programme), [], programme, live)
    if g.principal.role not in EDITORS or live:
        flash("This programme cannot be changed now: " + _reason(g.principal.role, live), "error")
        return redirect(url_for("pages.programme_page", key=key))
    state, data, errors = read_form(request.form, existing=programme)
    if not errors:
        try:
            data.pop("key")
            domain.update_programme(db.session, g.principal.actor, programme, data)
            db.session.commit()
        except PilotError as exc:
            db.session.rollback()
            errors = _domain_errors(exc, "variants")
        else:
            flash(f"Programme {programme.name} saved.")
            return redirect(url_for("pages.programme_page", key=key))
    return _form(state, errors, programme, live), 422


@bp.post("/programmes/preview")
@login_required(*ANALYSTS)
def programme_preview():
    """What each variant of the form means at the till, or what to fix first (the live preview)."""
    _state, data, errors = read_form(request.form)
    out = []
    for pos, (index, variant) in enumerate(zip(_indices(request.form), data["variants"])):
        at = f"variants[{pos}]"  # what the till would do: its mechanic and parameters (not its key or name)
        mine = [e for e in errors if e["path"].startswith((f"{at}.parameters", f"{at}.mechanic"))]
        text = None if mine or variant["mechanic"] not in MECHANICS else describe(variant["mechanic"],
                                                                                 variant["parameters"])
        out.append({"index": index, "description": text, "errors": mine})
    return jsonify({"variants": out})


def _reason(role: str, live: list[str]) -> str:
    if live:
        return (f"pilot {', '.join(live)} of it is running or paused, and customers already assigned to a variant "
                "would get another card. Complete the pilot, or make a new programme.")
    return "only managers and admins change programmes." if role not in EDITORS else ""


def _form(state: dict[str, Any], errors: list[dict[str, str]], programme: Programme | None,
          live: list[str] | None = None):
    by_path: dict[str, list[str]] = {}
    for e in errors:
        by_path.setdefault(e["path"], []).append(e["message"])
    readonly = programme is not None and (bool(live) or g.principal.role not in EDITORS)
    return render_template("programme_form.html", state=state, errors=errors, by_path=by_path, programme=programme,
                           specs=all_specs(), mechanics=MECHANIC_NAMES, readonly=readonly,
                           reason=_reason(g.principal.role, live or []) if readonly else "")


def _variant_state(key: str, name: str, mechanic: str, parameters: dict[str, Any], stored: bool = False
                   ) -> dict[str, Any]:
    """A variant as the form shows it: the typed text of every input of its mechanic."""
    values: dict[str, str] = {}
    for spec in field_specs(mechanic) if mechanic in MECHANICS else ():
        value = parameters.get(spec.name, spec.default)
        if spec.kind == "table":
            for r, row in enumerate(value or []):
                for c in spec.columns:
                    values[f"{mechanic}-{spec.name}-{r}-{c.name}"] = c.shown(row.get(c.name))
        else:
            values[f"{mechanic}-{spec.name}"] = spec.shown(value)
    return {"key": key, "name": name, "mechanic": mechanic, "values": values, "stored": stored,
            "description": describe(mechanic, parameters) if stored else None}


def _stored_state(programme: Programme) -> dict[str, Any]:
    return {"key": programme.key, "name": programme.name, "description": programme.description,
            "variants": [_variant_state(v.key, v.name, v.mechanic, v.parameters, True) for v in programme.variants]}


def _indices(form: MultiDict) -> list[int]:
    """The form's variant numbers in order (rows added in the browser may leave gaps)."""
    return sorted({int(m.group(1)) for name in form if (m := re.fullmatch(r"v-(\d+)-mechanic", name))})


def read_form(form: MultiDict, existing: Programme | None = None
              ) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, str]]]:
    """The form as typed (to show again), as the domain's data, and every problem at once as
    {"path", "message"} with the API's paths (variants[1].parameters.rate): the programme loaded by the
    schema the API loads it with, each variant's parameters by its mechanic's."""
    errors: list[dict[str, str]] = []
    key = existing.key if existing is not None else form.get("key", "").strip()
    name, description = form.get("name", "").strip(), form.get("description", "").strip()
    stored = {v.key for v in existing.variants} if existing is not None else set()
    state: dict[str, Any] = {"key": key, "name": name, "description": description, "variants": []}
    data: dict[str, Any] = {"key": key, "name": name, "description": description, "variants": []}
    seen: set[str] = set()
    for pos, i in enumerate(_indices(form)):
        prefix, path = f"v-{i}-", f"variants[{pos}]"
        vkey, vname = form.get(prefix + "key", "").strip(), form.get(prefix + "name", "").strip()
        mechanic = form.get(prefix + "mechanic", "")
        values = {n.removeprefix(prefix): v for n, v in form.items() if n.startswith(prefix)}
        state["variants"].append({"key": vkey, "name": vname, "mechanic": mechanic, "values": values,
                                  "stored": vkey in stored})
        if vkey and vkey in seen:
            errors.append({"path": f"{path}.key", "message": f"Another variant has the key {vkey!r}."})
        seen.add(vkey)
        if mechanic not in MECHANICS:
            data["variants"].append({"key": vkey, "name": vname or None, "mechanic": mechanic, "parameters": {}})
            continue
        params, problems = read_parameters(mechanic, lambda n, p=prefix, m=mechanic: form.get(f"{p}{m}-{n}"),
                                           f"{path}.parameters")
        errors += problems
        data["variants"].append({"key": vkey, "name": vname or None, "mechanic": mechanic, "parameters": params})
    try:
        ProgrammeIn().load({**data, "variants": [{k: v for k, v in variant.items() if v is not None}
                                                 for variant in data["variants"]]})
    except ma.ValidationError as exc:
        errors = field_paths(exc.messages) + errors
    return state, data, errors


def _domain_errors(exc: PilotError, path: str) -> list[dict[str, str]]:
    """A refusal of the domain as the form's errors (its paths where it gave them)."""
    details = exc.details or {}
    if details.get("errors"):
        return list(details["errors"])
    if details.get("fields"):
        return field_paths(details["fields"])
    return [{"path": path, "message": exc.message}]
