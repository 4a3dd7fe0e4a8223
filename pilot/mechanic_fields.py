"""The inputs of each mechanic's parameters, read off the parameter schemas the API validates with
(pilot.mechanics.SCHEMAS), and the values of a form turned back into parameters for those schemas.

One validation: a form's parameters go through `validate_parameters` as the API's do; this module only
says what to ask for (labels, units, ranges) and reads the typed text (a rate typed as a percentage).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import marshmallow as ma

from pilot.errors import field_paths
from pilot.mechanics import SCHEMAS, validate_parameters

# plain-language labels and help for the parameters' names (every name of pilot.mechanics has one)
LABELS = {
    "rate": ("Discount", "The share taken off every purchase."),
    "offer": ("Personal offer", "What the customer is offered, in a few words."),
    "expected_discount_rate": ("Expected discount", "The average share the offers take off a purchase."),
    "cost_per_member_per_period": ("Cost per member per period", "What one member costs per period, besides "
                                                                 "discounts."),
    "period_days": ("Period (days)", "The length of one period, in days."),
    "tiers": ("Tiers", "One row per tier, from the lowest: its name, the spend per period that reaches it, "
                       "and its discount."),
    "name": ("Name", ""),
    "threshold": ("Spend to reach it", "Spend per period"),
    "discount_rate": ("Discount", ""),
    "bands": ("Spend bands", "One row per band: the basket that reaches it and its discount, both growing."),
    "min_spend": ("Minimum spend", ""),
    "points_per_unit": ("Points per unit spent", "Points given for each unit of currency spent."),
    "point_value": ("Value of a point", "What one point is worth when redeemed."),
    "expiry_days": ("Points expire after (days)", ""),
    "breakage": ("Breakage", "The share of points never redeemed."),
    "terms": ("Service terms", "What the preferred service offers."),
    "condition": ("Condition", "What a customer does to take part, e.g. spend 50 or more."),
    "prize_value": ("Prize value", ""),
    "win_probability": ("Chance to win", ""),
    "resource": ("What members get access to", ""),
    "fee": ("Membership fee", "0 for a free club."),
    "benefits": ("Benefits", "One benefit per line."),
}


@dataclass(frozen=True)
class FieldSpec:
    """One input of a mechanic's parameters."""
    name: str
    label: str
    kind: str  # percent, number, integer, text, lines, table
    required: bool
    default: Any = None
    low: float | None = None
    high: float | None = None
    help: str = ""
    columns: tuple[FieldSpec, ...] = field(default_factory=tuple)

    def shown(self, value: Any) -> str:
        """A stored value as typed in the form (a rate as a percentage)."""
        if value is None:
            return ""
        if self.kind == "percent":
            return f"{value * 100:.6g}"
        if self.kind == "lines":
            return "\n".join(value)
        return f"{value:g}" if isinstance(value, float) else str(value)


def _range(f: ma.fields.Field) -> tuple[float | None, float | None, bool]:
    for v in f.validators:
        if isinstance(v, ma.validate.Range):
            return v.min, v.max, v.min_inclusive
    return None, None, True


def _spec(name: str, f: ma.fields.Field) -> FieldSpec:
    label, help_text = LABELS.get(name, (name.replace("_", " ").capitalize(), ""))
    low, high, low_included = _range(f)
    default = None if f.load_default is ma.missing or callable(f.load_default) else f.load_default
    columns: tuple[FieldSpec, ...] = ()
    if isinstance(f, ma.fields.List) and isinstance(f.inner, ma.fields.Nested):
        kind, columns = "table", tuple(_spec(n, c) for n, c in f.inner.schema.fields.items())
    elif isinstance(f, ma.fields.List):
        kind = "lines"
    elif isinstance(f, ma.fields.Integer):
        kind = "integer"
    elif isinstance(f, ma.fields.Float):
        kind = "percent" if high is not None and high <= 1 else "number"  # shares are typed as percentages
    else:
        kind = "text"
    help_text = " ".join(x for x in (help_text, _range_text(kind, low, high, low_included)) if x)
    return FieldSpec(name, label, kind, f.required, default, low, high, help_text, columns)


def _range_text(kind: str, low: float | None, high: float | None, low_included: bool = True) -> str:
    if kind == "percent":
        if not low_included:
            return f"In percent, more than {low * 100:g}% and at most {high * 100:g}%."
        return f"In percent, {low * 100:g}% to {high * 100:g}%."
    if low is not None and high is not None:
        return f"From {low:g} to {high:g}."
    if low is not None:
        if not low_included:
            return f"More than {low:g}."
        return f"At least {low:g}." if low > 0 or kind == "integer" else "0 or more."
    return ""


def field_specs(mechanic: str) -> tuple[FieldSpec, ...]:
    """The inputs of the mechanic's parameters, in the schema's order."""
    return tuple(_spec(n, f) for n, f in SCHEMAS[mechanic]().fields.items())


def all_specs() -> dict[str, tuple[FieldSpec, ...]]:
    """The inputs of every mechanic."""
    return {m: field_specs(m) for m in SCHEMAS}


def _typed(spec: FieldSpec, text: str) -> Any:
    """The value of one typed input; ValueError for text that is not a number where one is asked."""
    text = text.strip()
    if spec.kind == "percent":
        return float(text.rstrip("%").replace(",", ".")) / 100
    if spec.kind == "number":
        return float(text.replace(",", "."))
    if spec.kind == "integer":
        return int(text)
    if spec.kind == "lines":
        return [line.strip() for line in text.splitlines() if line.strip()]
    return text


NOT_A_NUMBER = {"percent": "Type a percentage, e.g. 5 for 5%.", "number": "Type a number.",
                "integer": "Type a whole number."}


def read_parameters(mechanic: str, value: Callable[[str], str | None], prefix: str
                    ) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The parameters a form typed (`value(name)` gives an input's text, or None when absent; a table's
    cells are named `<name>-<row>-<column>`) checked by the mechanic's schema, and every problem as
    {"path", "message"} under `prefix` (e.g. variants[1].parameters)."""
    params: dict[str, Any] = {}
    errors: list[dict[str, str]] = []
    for spec in field_specs(mechanic):
        if spec.kind == "table":
            params[spec.name] = _read_table(spec, value, f"{prefix}.{spec.name}", errors)
            continue
        text = value(spec.name)
        if text is None or not text.strip():
            continue  # the schema's default, or its "required" message
        try:
            params[spec.name] = _typed(spec, text)
        except ValueError:
            errors.append({"path": f"{prefix}.{spec.name}", "message": NOT_A_NUMBER[spec.kind]})
    if errors:
        return params, errors
    try:
        return validate_parameters(mechanic, params), []
    except ma.ValidationError as exc:
        return params, [_in_units(mechanic, {"path": f"{prefix}.{e['path']}".rstrip("."), "message": e["message"]})
                        for e in field_paths(exc.messages)]


def _read_table(spec: FieldSpec, value: Callable[[str], str | None], path: str,
                errors: list[dict[str, str]]) -> list[dict[str, Any]]:
    """The rows of a table input, numbered from 0 without gaps (blank rows at the end left out)."""
    typed: list[dict[str, str]] = []
    while len(typed) < 50:
        cells = {c.name: value(f"{spec.name}-{len(typed)}-{c.name}") for c in spec.columns}
        if all(v is None for v in cells.values()):
            break
        typed.append({k: (v or "").strip() for k, v in cells.items()})
    while typed and not any(typed[-1].values()):
        typed.pop()
    rows: list[dict[str, Any]] = []
    for i, cells in enumerate(typed):
        row: dict[str, Any] = {}
        for c in spec.columns:
            if cells[c.name]:
                try:
                    row[c.name] = _typed(c, cells[c.name])
                except ValueError:
                    errors.append({"path": f"{path}[{i}].{c.name}", "message": NOT_A_NUMBER[c.kind]})
        rows.append(row)
    return rows


def _in_units(mechanic: str, error: dict[str, str]) -> dict[str, str]:
    """A range message of a percentage input said in percent (the schema says it as a fraction)."""
    name = error["path"].rsplit(".", 1)[-1]
    specs = {s.name: s for s in field_specs(mechanic)}
    specs.update({c.name: c for s in specs.values() for c in s.columns})
    spec = specs.get(name)
    if spec is not None and spec.kind == "percent" and error["message"].startswith("Must be"):
        return {**error, "message": spec.help.rsplit("In percent", 1)[-1].join(("In percent", ""))}
    if error["message"] == "Missing data for required field.":
        return {**error, "message": "This is required."}
    return error
