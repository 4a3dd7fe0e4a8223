"""Customer groups: ordered rules over customer attributes, compiled to one SQL CASE."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, literal, select, true
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from pilot.models import Customer, CustomerGroup

OTHER = "other"
OPERATORS = ("eq", "ne", "in", "lt", "le", "gt", "ge", "between", "exists")
COLUMNS = {"age_band": Customer.age_band, "household_size": Customer.household_size,
           "children": Customer.children}
INTEGER_COLUMNS = frozenset({"household_size", "children"})
# What the databases can compare a number with: PostgreSQL binds one for an integer column as
# `integer`, any other integer as `bigint` (as SQLite does); attributes compare as floats, exact to 2**53.
INTEGER_LIMIT, NUMBER_LIMIT = 2**31 - 1, 2**53


def rule_problem(rule: dict[str, Any]) -> str | None:
    """Why a rule is malformed, or None when it is fine."""
    op, value = rule["op"], rule.get("value")
    if op == "exists":
        return None if value is None or isinstance(value, bool) else "exists takes no value or true/false."
    if value is None:
        return f"{op} needs a value."
    return _shape_problem(op, value) or _values_problem(rule["attribute"], _listed(value))


def _shape_problem(op: str, value: Any) -> str | None:
    if op == "in":
        return None if isinstance(value, list) and value and all(_scalar(v) for v in value) else \
            "in needs a non-empty list of strings or numbers."
    if op == "between":
        ok = isinstance(value, list) and len(value) == 2 and all(_number(v) for v in value) and value[0] <= value[1]
        return None if ok else "between needs [low, high] numbers with low <= high."
    if op in ("lt", "le", "gt", "ge"):
        return None if _number(value) else f"{op} needs a number."
    return None if _scalar(value) else f"{op} needs a string, number or boolean."


def _values_problem(attribute: str, values: list[Any]) -> str | None:
    """Why well-shaped values cannot be compared with the attribute in SQL, or None."""
    kinds = {bool if isinstance(v, bool) else str if isinstance(v, str) else float for v in values}
    if len(kinds) > 1:
        return "The values of a rule are all strings, all numbers or all true/false."
    if attribute in INTEGER_COLUMNS and kinds != {float}:
        return f"{attribute} is compared with numbers."
    limit = INTEGER_LIMIT if attribute in INTEGER_COLUMNS else NUMBER_LIMIT
    if kinds == {float} and not all(abs(v) <= limit for v in values):  # (NaN and infinity fail too)
        return f"Numbers are finite and at most {limit} in size."
    return None


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _scalar(v: Any) -> bool:
    return isinstance(v, (str, int, float, bool))


def _operand(attribute: str, sample: Any) -> ColumnElement:
    if attribute in COLUMNS:
        return COLUMNS[attribute]
    element = Customer.attributes[attribute]
    if isinstance(sample, bool):
        return element.as_boolean()
    return element.as_float() if _number(sample) else element.as_string()


def rule_clause(rule: dict[str, Any]) -> ColumnElement[bool]:
    """One rule as a SQL condition; a missing attribute satisfies nothing but `exists: false`."""
    op, value, attr = rule["op"], rule.get("value"), rule["attribute"]
    if op == "exists":
        col = _operand(attr, "")
        return col.is_(None) if value is False else col.is_not(None)
    sample = value[0] if isinstance(value, list) else value
    col = _operand(attr, sample)
    if op == "in":
        return col.in_(value)
    if op == "between":
        return col.between(value[0], value[1])
    return {"eq": col.__eq__, "ne": col.__ne__, "lt": col.__lt__, "le": col.__le__,
            "gt": col.__gt__, "ge": col.__ge__}[op](value)


def group_case(groups: Sequence[dict[str, Any]]) -> ColumnElement[str]:
    """A CASE giving each customer the key of the first group whose rules all hold, else 'other'."""
    if not groups:
        return literal(OTHER)
    whens = [(and_(true(), *[rule_clause(r) for r in g["rules"]]), g["key"]) for g in groups]
    return case(*whens, else_=OTHER)


def saved_groups(session: Session) -> list[dict[str, Any]]:
    """The stored groups in their order, as plain data."""
    stmt = select(CustomerGroup).order_by(CustomerGroup.position, CustomerGroup.id)
    return [{"key": g.key, "name": g.name, "rules": g.rules} for g in session.scalars(stmt)]


def preview(session: Session, groups: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """How many customers fall into each group (and 'other'), counted in the database."""
    label = group_case(groups).label("group_key")
    rows = session.execute(select(label, func.count()).select_from(Customer).group_by(label)).all()
    found = dict(rows)
    counts = {g["key"]: int(found.get(g["key"], 0)) for g in groups}
    counts[OTHER] = int(found.get(OTHER, 0))
    return {"counts": counts, "total": sum(counts.values())}


def known_attributes(session: Session) -> dict[str, int]:
    """Every attribute some customer has, with how many customers have it: the columns, then the free
    attributes (keys of `attributes`) by name."""
    counts = {name: int(n) for name, n in zip(COLUMNS, session.execute(
        select(*[func.count(col) for col in COLUMNS.values()]).select_from(Customer)).one())}
    if session.get_bind().dialect.name == "postgresql":
        key = func.jsonb_object_keys(func.cast(Customer.attributes, JSONB)).label("key")
        stmt = select(key, func.count()).select_from(Customer).group_by(key)
    else:
        each = func.json_each(Customer.attributes).table_valued("key").alias("each")
        stmt = select(each.c.key, func.count()).select_from(Customer).join(each, true()).group_by(each.c.key)
    free = {k: int(n) for k, n in session.execute(stmt) if k not in COLUMNS}
    return {**counts, **dict(sorted(free.items()))}


def attribute_warnings(groups: Sequence[dict[str, Any]], known: dict[str, int]) -> list[dict[str, str]]:
    """A warning for each rule on an attribute no customer has (a typo previews 0 customers silently),
    as {"path": "groups[0].rules[1].attribute", "message"}."""
    out = []
    for i, group in enumerate(groups):
        for j, rule in enumerate(group["rules"]):
            if not known.get(rule["attribute"]) and not (rule["op"] == "exists" and rule.get("value") is False):
                out.append({"path": f"groups[{i}].rules[{j}].attribute",
                            "message": f"No customer has the attribute {rule['attribute']!r}, so this rule "
                                       "matches nobody. Check the spelling; the data's attributes are offered."})
    return out


def preview_alone(session: Session, groups: Sequence[dict[str, Any]]) -> dict[str, int]:
    """How many customers each group's rules match on their own, ignoring the groups before it."""
    if not groups:
        return {}
    sums = [func.count(case((and_(true(), *[rule_clause(r) for r in g["rules"]]), 1))) for g in groups]
    return {g["key"]: int(n) for g, n in zip(groups, session.execute(select(*sums).select_from(Customer)).one())}
