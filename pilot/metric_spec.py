"""What a metric definition is made of, and the one check of a definition's body (every problem named by field).

A measure says which rows of which source count for a unit and how they fold into the unit's value over
the analysis window; a defined metric is a measure (mean, proportion) or a numerator and a denominator
measure (ratio). docs/events_and_metrics.md describes the shape.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from pilot.errors import Invalid

KINDS = ("mean", "proportion", "ratio")
DIRECTIONS = ("up", "down")
SOURCES = ("events", "transactions")
AGGREGATIONS = ("count", "sum", "max", "last", "any", "nps")
FIELD_AGGREGATIONS = ("sum", "max", "last")
EVENT_FIELDS = ("value",)
TRANSACTION_FIELDS = ("amount", "items", "discount_cost", "points_issued", "points_redeemed")
TRANSACTION_FILTERS = {"type": ("sale", "refund"), "channel": None}
MEASURE_FIELDS = ("source", "type", "filters", "aggregation", "field", "value_at_least")
TOP_FIELDS = ("key", "name", "description", "good_direction", "kind", "covariate", "numerator", "denominator")
KEY = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
MAX_FILTERS = 20


@dataclass(frozen=True)
class Measure:
    source: str
    type: str | None
    filters: dict[str, Any]
    aggregation: str
    field: str | None
    value_at_least: float | None

    def as_dict(self) -> dict[str, Any]:
        """The measure as the API shows it (unset parts left out)."""
        out: dict[str, Any] = {"source": self.source, "type": self.type, "filters": dict(self.filters),
                               "aggregation": self.aggregation, "field": self.field,
                               "value_at_least": self.value_at_least}
        return {k: v for k, v in out.items() if v is not None}


@dataclass(frozen=True)
class DefinedMetric:
    key: str
    version: int
    name: str
    description: str
    good_direction: str
    kind: str
    covariate: bool
    measure: Measure | None
    numerator: Measure | None
    denominator: Measure | None

    def spec(self) -> dict[str, Any]:
        """The stored spec: covariate and the measure (or numerator and denominator), as the body gives them."""
        if self.kind == "ratio":
            assert self.numerator is not None and self.denominator is not None
            return {"covariate": self.covariate, "numerator": self.numerator.as_dict(),
                    "denominator": self.denominator.as_dict()}
        assert self.measure is not None
        return {"covariate": self.covariate, **self.measure.as_dict()}

    def body(self) -> dict[str, Any]:
        """The definition as the API takes it (POST /api/v1/metrics)."""
        return {"key": self.key, "name": self.name, "description": self.description,
                "good_direction": self.good_direction, "kind": self.kind, **self.spec()}


def attribute_text(value: Any) -> str:
    """An event attribute's (or an attribute filter's) value as the text it is stored and compared as."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value)


class _Problems:
    def __init__(self) -> None:
        self.fields: dict[str, list[str]] = {}

    def add(self, field: str, message: str) -> None:
        self.fields.setdefault(field, []).append(message)


def _text(p: _Problems, body: dict[str, Any], field: str, limit: int, required: bool, at: str = "") -> str | None:
    value = body.get(field)
    if value is None or (value == "" and not required):
        if required:
            p.add(at + field, "Missing data for required field.")
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        p.add(at + field, f"A text of 1 to {limit} characters.")
        return None
    return value.strip()


def _choice(p: _Problems, body: dict[str, Any], field: str, choices: tuple[str, ...], at: str = "") -> str | None:
    value = body.get(field)
    if value not in choices:
        p.add(at + field, "Missing data for required field." if value is None
              else f"Must be one of: {', '.join(choices)}.")
        return None
    return value


def _filters(p: _Problems, at: str, source: str | None, filters: Any) -> dict[str, Any]:
    if filters is None:
        return {}
    if not isinstance(filters, dict) or len(filters) > MAX_FILTERS:
        p.add(at + "filters", f"An object of at most {MAX_FILTERS} attribute: value pairs.")
        return {}
    for name, value in filters.items():
        where = f"{at}filters.{name}"
        if not NAME.match(str(name)):
            p.add(at + "filters", f"Attribute name {str(name)[:64]!r}: 1-64 letters, digits, _ . : -")
        elif not isinstance(value, (str, int, float, bool)) or isinstance(value, float) and not math.isfinite(value) \
                or isinstance(value, str) and len(value) > 200:
            p.add(where, "A text (at most 200 characters), number or true/false to compare for equality.")
        elif source == "transactions" and name not in TRANSACTION_FILTERS:
            p.add(where, "Transactions filter on type and channel only.")
        elif source == "transactions" and name == "type" and value not in TRANSACTION_FILTERS["type"]:
            p.add(where, "Must be one of: sale, refund.")
        elif source == "transactions" and not isinstance(value, str):
            p.add(where, "A text.")
    return {str(k): attribute_text(v) for k, v in filters.items()}


def _number(p: _Problems, where: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        p.add(where, "A finite number.")
        return None
    return float(value)


def measure(p: _Problems, body: Any, at: str = "") -> Measure | None:
    """The measure in `body` (fields prefixed `at` in the problems), or None with its problems added."""
    if not isinstance(body, dict):
        p.add(at.rstrip(".") or "_schema", "An object: source, type, filters, aggregation, field.")
        return None
    unknown = sorted(set(body) - set(MEASURE_FIELDS) - (set(TOP_FIELDS) if not at else set()))
    for name in unknown:
        p.add(at + str(name)[:64], "Unknown field.")
    source = _choice(p, body, "source", SOURCES, at)
    aggregation = _choice(p, body, "aggregation", AGGREGATIONS, at)
    kind_of_type = body.get("type")
    if source == "events":
        kind_of_type = _text(p, body, "type", 64, True, at)
        if kind_of_type is not None and not NAME.match(kind_of_type):
            p.add(at + "type", "1-64 letters, digits, _ . : -")
    elif kind_of_type is not None and source == "transactions":
        p.add(at + "type", "Transactions have no event type; filter on {\"type\": \"sale\"|\"refund\"}.")
    filters = _filters(p, at, source, body.get("filters"))
    field = body.get("field")
    allowed = EVENT_FIELDS if source == "events" else TRANSACTION_FIELDS
    if aggregation in FIELD_AGGREGATIONS:
        if field not in allowed:
            p.add(at + "field", f"{aggregation} needs a field, one of: {', '.join(allowed)}.")
    elif field is not None:
        p.add(at + "field", f"{aggregation} takes no field.")
        field = None
    if aggregation == "nps" and source == "transactions":
        p.add(at + "aggregation", "nps scores event values (0-10); use source events.")
    at_least = _number(p, at + "value_at_least", body.get("value_at_least"))
    if at_least is not None and (source != "events" or aggregation not in ("count", "any")):
        p.add(at + "value_at_least", "Only for events counted (count or any): the values at least this.")
    if source is None or aggregation is None:
        return None
    return Measure(source, kind_of_type if source == "events" else None, filters, aggregation, field, at_least)


def parse(body: Any, key: str | None = None, version: int = 1) -> DefinedMetric:
    """The defined metric a body describes, or a 422 naming every wrong field (`key` fixed when given)."""
    p = _Problems()
    if not isinstance(body, dict):
        raise Invalid("A metric definition is a JSON object.", details={"fields": {"_schema": ["Not an object."]}})
    if key is None:
        key = _text(p, body, "key", 64, True)
        if key is not None and not KEY.match(key):
            p.add("key", "1-64 lower-case letters, digits and _, starting with a letter.")
    name = _text(p, body, "name", 200, True)
    description = _text(p, body, "description", 1000, False) or ""
    direction = _choice(p, body, "good_direction", DIRECTIONS)
    kind = _choice(p, body, "kind", KINDS)
    covariate = body.get("covariate", False)
    if not isinstance(covariate, bool):
        p.add("covariate", "true or false.")
    single = numerator = denominator = None
    if kind == "ratio":
        for name_ in sorted(set(body) & set(MEASURE_FIELDS)):
            p.add(name_, "A ratio is a numerator and a denominator; give this inside them.")
        numerator = measure(p, body.get("numerator"), "numerator.")
        denominator = measure(p, body.get("denominator"), "denominator.")
        for at, m in (("numerator.", numerator), ("denominator.", denominator)):
            if m is not None and m.aggregation == "nps":
                p.add(at + "aggregation", "A ratio's parts are counts or sums; nps is a mean.")
    elif kind is not None:
        for name_ in ("numerator", "denominator"):
            if body.get(name_) is not None:
                p.add(name_, "Only a ratio has a numerator and a denominator.")
        single = measure(p, body)
        if single is not None and (kind == "proportion") != (single.aggregation == "any"):
            p.add("aggregation", "A proportion aggregates with any (1 if the unit has a matching row), and "
                                 "any makes a proportion.")
    if p.fields:
        first = next(iter(p.fields))
        raise Invalid(f"The metric definition is not valid: {first}: {p.fields[first][0]}",
                      details={"fields": p.fields})
    assert key is not None and name is not None and direction is not None and kind is not None
    return DefinedMetric(key, version, name, description, direction, kind, covariate, single, numerator, denominator)
