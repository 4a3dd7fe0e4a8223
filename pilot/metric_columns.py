"""How the analysis reads each metric, and a defined metric's per-unit values as SQL.

A catalogue metric reads fixed columns of the unit rows (`METRIC_SOURCES`). A defined metric
(pilot.metric_spec) gets short columns of its own, by its place in the run's configuration: `d3`
(and `d3n`: a ratio's denominator, or the units that answered for NPS), with `pre_d3`/`pre_d3n` over
the pre-period when it has a covariate. `per_customer` computes them in one pass per source (customer
events, or transactions with the spec's filters) over the stage's assigned customers, grouped by
customer; pilot.aggregation LEFT JOINs that to the assignments, so a unit with no matching row is 0.

Per unit and window: count = matching rows (with `value_at_least`, those whose value reaches it);
sum / max / last = of the field (last: of the latest row by time, ties by id); any = 1 if any row
matches; 0 when no row does. NPS: the unit's last answer scores +100 (9–10), 0 (7–8) or −100 (0–6), and
the metric is NPS as surveys define it — among the units that answered: Σ score ÷ units that
answered, a ratio over every assigned unit (delta method; a unit without an answer adds 0 to both
sums), so a programme that changes who answers is not mistaken for one that changes what they say.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Float, and_, case, cast, func, literal, or_, select, type_coerce
from sqlalchemy.dialects.postgresql import ARRAY, array
from sqlalchemy.sql.elements import ColumnElement

from pilot.metric_spec import attribute_text
from pilot.metrics import CATALOGUE
from pilot.models import CustomerEvent, Transaction
from pilot.sqltime import epoch_seconds

WEEK = 7 * 86400

# per catalogue metric: (per-unit value, covariate) for means and proportions, (numerator,
# denominator) for ratios, as named in a cube's sums
METRIC_SOURCES = {"spend_per_customer": ("spend", "pre_spend"), "visits_per_customer": ("visits", "pre_visits"),
                  "discount_cost_per_customer": ("cost", None), "conversion": ("converted", None),
                  "retention": ("retained", None), "spend_per_visit": ("spend", "visits"),
                  "items_per_basket": ("items", "visits")}


@dataclass(frozen=True)
class MetricInfo:
    """One metric as the analysis reads it: which test, which sums, which way is good."""

    key: str
    kind: str  # as defined and shown: mean | proportion | ratio
    good_direction: str
    value: str  # the per-unit value (a ratio's numerator)
    other: str | None  # the covariate of a mean or proportion, a ratio's denominator
    test: str  # the estimator: mean (Welch, CUPED with a covariate) | proportion | ratio
    version: int | None = None  # defined metrics: the definition's version
    name: str | None = None

    @property
    def defined(self) -> bool:
        return self.version is not None

    @property
    def label(self) -> str:
        """How a report names it: the key, with the definition's version ('nps (v2)')."""
        return self.key if self.version is None else f"{self.key} (v{self.version})"


CATALOGUE_INFO = {k: MetricInfo(k, m.kind, m.good_direction, *METRIC_SOURCES[k], test=m.kind)
                  for k, m in CATALOGUE.items()}


def stored(metric: Any) -> dict[str, Any]:
    """A defined metric (pilot.metric_spec.DefinedMetric) as a run records it in its configuration."""
    return {k: v for k, v in asdict(metric).items() if k != "description"}


def parts(definition: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(role, measure) of a stored definition: ('value', m) or ('value', num), ('other', den)."""
    if definition["kind"] == "ratio":
        return [("value", definition["numerator"]), ("other", definition["denominator"])]
    return [("value", definition["measure"])]


def info(definition: dict[str, Any], index: int) -> MetricInfo:
    """How the analysis reads the run's `index`-th defined metric."""
    d, kind = f"d{index}", definition["kind"]
    nps = kind != "ratio" and definition["measure"]["aggregation"] == "nps"
    if kind == "ratio" or nps:
        test, other = "ratio", f"{d}n"
    else:  # CUPED on the pre-period value; a proportion with a covariate is adjusted as a mean of 0/1
        other = f"pre_{d}" if definition.get("covariate") else None
        test = "mean" if other or kind == "mean" else "proportion"
    return MetricInfo(definition["key"], kind, definition["good_direction"], d, other, test,
                      definition["version"], definition.get("name"))


@dataclass(frozen=True)
class Column:
    """One per-unit column of a defined metric: its name, measure, window and what it holds."""

    name: str
    measure: dict[str, Any]
    pre: bool
    answered: bool = False  # NPS: 1 if the unit answered in the window (else the score)
    proportion: bool = False  # a proportion's value: 1 if the measure is positive


def columns(definitions: list[dict[str, Any]]) -> list[Column]:
    """Every per-unit column the run's defined metrics need (pre-period ones with a covariate)."""
    out = []
    for i, definition in enumerate(definitions):
        m = info(definition, i)
        windows = (False, True) if definition.get("covariate") else (False,)
        for pre in windows:
            prefix = "pre_" if pre else ""
            for role, measure in parts(definition):
                name = m.value if role == "value" else f"d{i}n"
                out.append(Column(prefix + name, measure, pre, proportion=definition["kind"] == "proportion"))
            if m.test == "ratio" and definition["kind"] != "ratio":  # NPS: who answered
                out.append(Column(f"{prefix}d{i}n", definition["measure"], pre, answered=True))
    return out


def products(definitions: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The cross-products each defined metric's test needs (as pilot.aggregation.PRODUCTS)."""
    out: list[tuple[str, str]] = []
    for i, definition in enumerate(definitions):
        m = info(definition, i)
        names = [m.value] + ([m.other] if m.other else [])
        if definition.get("covariate") and m.test == "ratio":
            names += [f"pre_{m.value}", f"pre_{m.other}"]
        out += [(a, b) for j, a in enumerate(names) for b in names[j:]]
    return out


def _source(source: str) -> tuple[Any, dict[str, ColumnElement]]:
    if source == "events":
        return CustomerEvent, {"value": CustomerEvent.value}
    t = Transaction
    return t, {"amount": cast(t.amount, Float), "items": t.items, "discount_cost": cast(t.discount_cost, Float),
               "points_issued": t.points_issued, "points_redeemed": t.points_redeemed}


def _matches(source: str, measure: dict[str, Any]) -> ColumnElement:
    """The rows of the source the measure counts."""
    if source == "events":
        e = CustomerEvent
        # attribute values and filters are both kept as text (pilot.metric_spec.attribute_text)
        conds = [e.type == measure["type"]] + [e.attributes[k].as_string() == attribute_text(v)
                                              for k, v in sorted((measure.get("filters") or {}).items())]
    else:
        t = Transaction
        conds = [getattr(t, k) == v for k, v in sorted((measure.get("filters") or {}).items())]
    if measure.get("value_at_least") is not None and source == "events":
        conds.append(CustomerEvent.value >= measure["value_at_least"])
    return and_(*conds) if conds else literal(True)


def per_customer(source: str, cols: list[Column], assignment: Any, units: ColumnElement, first: datetime,
                 cutoff: datetime, pre_start: datetime, started: datetime, dialect: str = "sqlite",
                 by_week: bool = False):
    """One row per assigned customer with a matching row: each column's value over its window (the
    window since the unit's exposure, or the pre-period), one pass over the source's rows. `by_week`:
    one row per customer and week since exposure (`wk`, 0-based) instead, of the window's columns."""
    table, fields = _source(source)
    a = assignment

    # the week since exposure, in one expression per row (the window's rows only count in their week)
    elapsed = epoch_seconds(table.occurred_at, dialect) - epoch_seconds(a.assigned_at, dialect)
    week = func.floor(elapsed / WEEK) if by_week else literal(0)
    measures = list({repr(sorted(c.measure.items())): c.measure for c in cols}.values())
    index = {repr(sorted(m.items())): i for i, m in enumerate(measures)}
    window = case((table.occurred_at >= a.assigned_at, 1),
                  (and_(table.occurred_at >= pre_start, table.occurred_at < started), 2), else_=0)
    pg = dialect == "postgresql"
    values = [window.label("win"), week.label("wk"), table.id.label("rid")]
    for i, m in enumerate(measures):
        match = _matches(source, m)
        values.append(case((match, 1), else_=0).label(f"m{i}"))
        if m.get("field") or m["aggregation"] == "nps":
            values.append(fields[m.get("field") or "value"].label(f"v{i}"))
        if m["aggregation"] in ("last", "nps") and pg:  # the latest row: max of [time, id, value] (parallel)
            values.append(epoch_seconds(table.occurred_at, dialect).label(f"t{i}"))
        elif m["aggregation"] in ("last", "nps"):  # SQLite: the latest matching row of each window first
            latest = (table.occurred_at.desc(), table.id.desc())
            values.append(func.row_number().over(partition_by=(a.customer_id, match, window),
                                                 order_by=latest).label(f"r{i}"))
            if by_week:
                values.append(func.row_number().over(partition_by=(a.customer_id, match, window, week),
                                                     order_by=latest).label(f"r{i}w"))
    rows = (select(a.customer_id.label("customer_id"), *values)
            .join(table, and_(table.customer_id == a.customer_id, table.occurred_at >= first,
                              table.occurred_at < cutoff))
            .where(units, or_(table.occurred_at >= a.assigned_at, table.occurred_at < started))
            .subquery(f"{source}_rows"))
    def score(v: ColumnElement) -> ColumnElement:
        return case((v >= 9, 100.0), (v >= 7, 0.0), (v.is_not(None), -100.0))  # (none without an answer)

    def fold(c: Column, cond: ColumnElement, rank: str) -> ColumnElement:
        i = index[repr(sorted(c.measure.items()))]
        agg = c.measure["aggregation"]
        cond = and_(rows.c[f"m{i}"] == 1, cond)
        if agg in ("last", "nps") and pg:
            if c.answered:
                return case((func.count().filter(cond) > 0, 1), else_=0)
            latest = func.max(array([rows.c[f"t{i}"], cast(rows.c.rid, Float), cast(rows.c[f"v{i}"], Float)]))
            value = type_coerce(latest.filter(cond), ARRAY(Float))[3]
            return score(value) if agg == "nps" else value
        if agg in ("last", "nps"):
            cond = and_(cond, rows.c[f"r{i}{rank}"] == 1)
        if c.answered or agg in ("count", "any"):
            return func.count().filter(cond)
        if agg == "nps":
            return func.sum(score(rows.c[f"v{i}"])).filter(cond)
        return (func.max if agg in ("max", "last") else func.sum)(cast(rows.c[f"v{i}"], Float)).filter(cond)
    if by_week:
        sums = [fold(c, rows.c.win == 1, "w").label(c.name) for c in cols if not c.pre]
        return (select(rows.c.customer_id, rows.c.wk, *sums).where(rows.c.win == 1)
                .group_by(rows.c.customer_id, rows.c.wk).subquery(f"{source}_weeks"))
    sums = [fold(c, rows.c.win == (2 if c.pre else 1), "").label(c.name) for c in cols]
    return select(rows.c.customer_id, *sums).group_by(rows.c.customer_id).subquery(f"{source}_per")


def unit_value(per: Any, c: Column, name: str | None = None) -> ColumnElement:
    """The column (or its week `name`) in the unit rows: 0 for a unit without matching rows; 0/1 for
    `any` and proportions."""
    name = name or c.name
    raw = func.coalesce(per.c[name], 0)
    if not c.answered and (c.proportion or c.measure["aggregation"] == "any"):
        return cast(case((raw > 0, 1.0), else_=0.0), Float).label(name)
    return cast(raw, Float).label(name)


def week_statements(unit: Any, subs: list[tuple[Any, list[Column]]], definitions: list[dict[str, Any]]) -> list[Any]:
    """Per arm × allocation period × week since exposure, over the units exposed for the whole week:
    Σ of each window column and the products its week tests need (`subs`: per source, its
    per-customer-week rows and their columns). A unit-week without rows adds zeros."""
    out = []
    for sub, cols in subs:
        names = [c.name for c in cols if not c.pre]
        value = {c.name: unit_value(sub, c) for c in cols if not c.pre}
        pairs = [(a, b) for a, b in products(definitions) if a in names and b in names]
        out.append(select(unit.c.variant, unit.c.period, sub.c.wk,
                          *[func.sum(value[n]).label(n) for n in names],
                          *[func.sum(value[a] * value[b]).label(f"{a}*{b}") for a, b in pairs])
                   .join(unit, unit.c.customer_id == sub.c.customer_id).where(unit.c.full_weeks > sub.c.wk)
                   .group_by(unit.c.variant, unit.c.period, sub.c.wk))
    return out


def run_definitions(session: Any, pilot: Any, engine: str) -> dict[str, Any]:
    """The defined metrics a run of the pilot measures, as its configuration records them: every
    current definition (the ones the pilot names as primary or guardrail at the version its plan
    allows; the others as secondaries). Store pilots and the Spark engine measure none: naming one
    there is a 422 `defined_metric_unsupported`; secondaries are left out and listed."""
    from pilot.errors import Invalid
    from pilot.metric_definitions import all_current
    named = {pilot.primary_metric, *(g.get("metric") for g in pilot.guardrails or [])} - set(CATALOGUE)
    if pilot.unit == "store" or engine != "database":
        if named:
            where = "store-randomised pilots" if pilot.unit == "store" else f"the {engine} engine"
            message = (f"Defined metrics ({', '.join(sorted(named))}) are not analysed for {where}: their "
                       "customer events are in Pilot's database only. Analyse with engine=database, or measure a "
                       "catalogue metric.")
            raise Invalid(message, code="defined_metric_unsupported",
                          details={"fields": {"engine" if pilot.unit != "store" else "primary_metric": [message]}})
        return {"defined_metrics": [], "defined_metrics_skipped": sorted(m.key for m in all_current(session))}
    return {"defined_metrics": [stored(m) for m in all_current(session)]}
