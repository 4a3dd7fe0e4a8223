"""Customer groups in the browser: the ordered list (first match wins) and a rule editor whose preview
counts each group live, alone and in the list's order, and warns about attributes no customer has."""
from __future__ import annotations

import re
from typing import Any

import marshmallow as ma
from flask import flash, g, jsonify, redirect, render_template, request, url_for
from werkzeug.datastructures import MultiDict

from pilot import customers as domain
from pilot.customer_groups import (
    OTHER,
    attribute_warnings,
    known_attributes,
    preview,
    preview_alone,
    saved_groups,
)
from pilot.db import db
from pilot.errors import PilotError, field_paths
from pilot.pages.base import ANALYSTS, bp, commit_or_flash, login_required
from pilot.setup_schemas import GroupIn

OPERATOR_WORDS = {"eq": "is", "ne": "is not", "in": "is one of", "lt": "is less than", "le": "is at most",
                  "gt": "is more than", "ge": "is at least", "between": "is between", "exists": "is present"}
OPERATOR_HELP = ("Values: one value; for “is one of” several, separated by commas; for “is between” the low and "
                 "the high end (both included), e.g. 2, 4; for “is present” yes or no.")
EDITORS = ("admin", "manager")


@bp.get("/groups")
@login_required(*ANALYSTS)
def groups():
    """The groups in their order, each counted in the list (first match wins) and on its own."""
    saved = saved_groups(db.session)
    return render_template("groups.html", groups=saved, counts=preview(db.session, saved)["counts"],
                           alone=preview_alone(db.session, saved), words=OPERATOR_WORDS,
                           can_edit=g.principal.role in EDITORS)


@bp.route("/groups/new", methods=["GET", "POST"])
@login_required(*EDITORS)
def group_new():
    """The rule editor for a new group."""
    return _editor(None)


@bp.route("/groups/<key>", methods=["GET", "POST"])
@login_required(*EDITORS)
def group_page(key: str):
    """The rule editor of a saved group."""
    return _editor(domain.get_group(db.session, key))


def _editor(group):
    saved = saved_groups(db.session)
    if request.method == "GET":
        state = {"key": "", "name": "", "position": len(saved) + 1,
                 "rules": [{"attribute": "", "op": "eq", "value": ""}]}
        if group is not None:
            state = {"key": group.key, "name": group.name, "position": group.position,
                     "rules": [{**r, "value": _shown(r.get("value"))} for r in group.rules]}
        return _render(state, group, [])
    state, data, errors = read_form(request.form, group)
    if not errors:
        try:
            if group is None:
                domain.create_group(db.session, g.principal.actor, data)
            else:
                data.pop("key")
                domain.update_group(db.session, g.principal.actor, group, data)
            db.session.commit()
        except PilotError as exc:
            db.session.rollback()
            errors = [{"path": "key", "message": exc.message}]
        else:
            flash(f"Customer group {state['name']} saved.")
            return redirect(url_for("pages.groups"))
    return _render(state, group, errors), 422


@bp.post("/groups/preview")
@login_required(*ANALYSTS)
def group_preview():
    """The live preview of the editor: the group alone, in the list at its position, the list's counts."""
    group = domain.get_group(db.session, request.form["editing"]) if request.form.get("editing") else None
    _state, data, errors = read_form(request.form, group)
    if errors:
        return jsonify({"errors": errors, "outputs": [{"selector": "#preview-alone", "text": "–"},
                                                       {"selector": "#preview-in-list", "text": "–"}]})
    order = placed(data, group)
    counts = preview(db.session, order)["counts"]
    alone = preview_alone(db.session, [data])[data["key"]]
    outputs = [{"selector": "#preview-alone", "text": f"{alone:,}"},
               {"selector": "#preview-in-list", "text": f"{counts[data['key']]:,}"},
               {"selector": "#preview-position", "text": str(data["position"])},
               {"selector": "#preview-other", "text": f"{counts[OTHER]:,}"}]
    outputs += [{"selector": f'[data-count-for="{g["key"]}"]', "text": f"{counts[g['key']]:,}"}
                for g in order if g["key"] != data["key"]]
    warnings = [{**w, "path": w["path"].removeprefix("groups[0].")}
                for w in attribute_warnings([data], known_attributes(db.session))]
    return jsonify({"errors": [], "warnings": warnings, "outputs": outputs})


@bp.post("/groups/<key>/delete")
@login_required(*EDITORS)
def group_delete(key: str):
    """Delete a group (the groups after it move up one)."""
    group = domain.get_group(db.session, key)
    commit_or_flash(lambda: (domain.delete_group(db.session, g.principal.actor, group),
                             f"Customer group {key} deleted.")[1], "Not deleted")
    return redirect(url_for("pages.groups"))


@bp.post("/groups/<key>/move")
@login_required(*EDITORS)
def group_move(key: str):
    """Move a group up or down the list (order decides: the first match wins)."""
    group = domain.get_group(db.session, key)
    position = group.position + (-1 if request.form.get("direction") == "up" else 1)
    commit_or_flash(lambda: (domain.update_group(db.session, g.principal.actor, group, {"position": position}),
                             f"Customer group {key} moved to place {max(position, 1)}.")[1], "Not moved")
    return redirect(url_for("pages.groups"))


def placed(data: dict[str, Any], group) -> list[dict[str, Any]]:
    """The saved groups with the edited one at its position (first match wins in this order)."""
    others = [x for x in saved_groups(db.session) if group is None or x["key"] != group.key]
    others.insert(max(0, min(data["position"] - 1, len(others))), data)
    return others


def _render(state: dict[str, Any], group, errors: list[dict[str, str]]):
    saved = saved_groups(db.session)
    by_path: dict[str, list[str]] = {}
    for e in errors:
        by_path.setdefault(e["path"], []).append(e["message"])
    order = [x for x in saved if group is None or x["key"] != group.key]
    return render_template("group_form.html", state=state, group=group, errors=errors, by_path=by_path,
                           attributes=known_attributes(db.session), operators=OPERATOR_WORDS,
                           operator_help=OPERATOR_HELP, others=order, positions=len(order) + 1)


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_shown(v) for v in value)
    return "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _scalar(text: str) -> Any:
    text = text.strip()
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def _value(op: str, text: str) -> Any:
    """A rule's value as typed, in the shape its operator takes (a list for 'in' and 'between')."""
    text = text.strip()
    if op == "exists":
        return None if not text else text.lower() not in ("no", "false", "0", "n")
    if op in ("in", "between"):
        return [_scalar(x) for x in re.split(r"[,;]", text) if x.strip()] or None
    return _scalar(text) if text else None


def read_form(form: MultiDict, group) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, str]]]:
    """The editor as typed, as the domain's data, and every problem at once (paths as the API's: rules[1].value),
    loaded by the schema the API loads a group with."""
    errors: list[dict[str, str]] = []
    key = group.key if group is not None else form.get("key", "").strip()
    name = form.get("name", "").strip()
    try:
        position = int(form.get("position", "1"))
    except ValueError:
        position = 1
    indices = sorted({int(m.group(1)) for n in form if (m := re.fullmatch(r"r-(\d+)-attribute", n))})
    typed, rules = [], []
    for i in indices:
        attribute, op = form.get(f"r-{i}-attribute", "").strip(), form.get(f"r-{i}-op", "")
        text = form.get(f"r-{i}-value", "")
        if not attribute and not text.strip():
            continue  # an empty row is no rule
        typed.append({"attribute": attribute, "op": op, "value": text})
        rules.append({"attribute": attribute, "op": op, "value": _value(op, text)})
    state = {"key": key, "name": name, "position": position, "rules": typed or [{"attribute": "", "op": "eq",
                                                                                  "value": ""}]}
    data = {"key": key, "name": name, "position": position, "rules": rules}
    try:
        GroupIn().load(data)  # the API's fields, limits and rule checks
    except ma.ValidationError as exc:
        errors = field_paths(exc.messages)
    return state, data, errors
