"""Sufficient statistics of a pilot stage, computed inside the database with one SQL layer.

Every assigned unit counts, buyers or not: one pass over the window's transactions, hash-joined to
the stage's assignments, sums each customer's values (window, pre-period, each week since
exposure), and `assignments` are LEFT JOINed to those sums, so a customer who bought nothing is a
row of zeros, not a missing row. Those unit rows go once into a temporary table; the statements
here aggregate them per arm × customer group, per arm × store, per arm × full weeks exposed and per
arm × week since exposure. Raw transactions never come into Python. The same SQLAlchemy Core runs
on SQLite and PostgreSQL, and on Apache Spark (pilot.spark_engine): a `Runner` says where the
statements run; the default, `DatabaseRunner`, is Pilot's own database.

Windows: a customer's outcome window runs from their assignment (exposure) to the cut-off; the
pre-period is the `pre_days` before the pilot started (the CUPED covariate). Programme cost is the
feed's `discount_cost` where sent, else the variant's cost model (pilot.mechanics) in SQL, plus the
member-period cost of membership mechanics pro rata over the exposure.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Float, MetaData, Select, Table, and_, case, cast, func, literal, or_, select, text
from sqlalchemy.orm import Session
from sqlalchemy.schema import CreateTableAs
from sqlalchemy.sql.elements import ColumnElement

from pilot.assignment import allocation_period
from pilot.customer_groups import group_case, saved_groups
from pilot.mechanics import member_period_cost
from pilot.metric_columns import METRIC_SOURCES as METRIC_SOURCES  # (re-exported: the catalogue's unit values)
from pilot.metric_columns import WEEK, columns, per_customer, products, unit_value, week_statements
from pilot.models import Assignment, Customer, Enrolment, Pilot, Stage, Transaction
from pilot.query_plans import set_based_plan
from pilot.sqltime import at_least_after, epoch_seconds, time_literal

# per-unit values and the sums of squares and cross-products each statistic needs
UNIT_VALUES = ("spend", "visits", "items", "cost", "converted", "retained", "pre_spend", "pre_visits", "pre_items")
PRODUCTS = (("spend", "spend"), ("visits", "visits"), ("items", "items"), ("cost", "cost"),
            ("spend", "visits"), ("items", "visits"), ("pre_spend", "pre_spend"), ("pre_visits", "pre_visits"),
            ("spend", "pre_spend"), ("visits", "pre_visits"), ("pre_items", "pre_items"), ("items", "pre_items"),
            ("pre_spend", "pre_visits"), ("spend", "pre_visits"), ("visits", "pre_spend"), ("items", "pre_visits"),
            ("visits", "pre_items"), ("pre_items", "pre_visits"))


# per unit and week since exposure: the values the week-by-week tables read (conversion in a week is
# visits > 0; retention, of the whole window, has no weekly value), and the products their tests need
WEEK_VALUES = ("spend", "visits", "items", "cost")
WEEK_PRODUCTS = (*((v, v) for v in WEEK_VALUES), ("spend", "visits"), ("items", "visits"))


def week_column(value: str, week: int) -> str:
    """The unit rows' column of `value` in week `week` (0-based) since exposure."""
    return f"{value}_w{week}"


def product_key(a: str, b: str) -> str:
    return f"{a}*{b}"


def product_sum(sums: dict[str, float], a: str, b: str) -> float:
    """Σ a·b over the units of one cell of sums (0 when the cube does not carry it)."""
    return sums.get(product_key(a, b), sums.get(product_key(b, a), 0.0))


@dataclass
class Cube:
    """The sufficient statistics of one stage: plain numbers keyed by arm and slice."""

    by_group: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    store_cells: dict[tuple[str, int, int], dict[str, float]] = field(default_factory=dict)  # arm × store × period
    by_week: dict[tuple[str, int], dict[str, float]] = field(default_factory=dict)
    stores: dict[tuple[str, int], dict[str, float]] = field(default_factory=dict)  # store pilots: per store
    # per arm × allocation period (units by the weights of their time), when the stage's weights changed,
    # and per arm × group × period (by_group and by_period are its sums)
    by_period: dict[tuple[str, int], dict[str, float]] = field(default_factory=dict)
    by_cell: dict[tuple[str, str, int], dict[str, float]] = field(default_factory=dict)
    week_cells: dict[tuple[str, int, int], dict[str, float]] = field(default_factory=dict)  # arm × week × period
    full_week_cells: dict[tuple[str, int, int], int] = field(default_factory=dict)  # arm × full weeks × period
    cutoff: datetime | None = None
    pre_start: datetime | None = None
    joins: str = "hash"  # how the unit rows joined the transactions to the units on PostgreSQL: hash or merge

    @property
    def by_store(self) -> dict[tuple[str, int], dict[str, float]]:
        """The sums per arm × store (all allocation periods)."""
        out: dict[tuple[str, int], dict[str, float]] = {}
        for (v, s, _), sums in self.store_cells.items():
            add_sums(out.setdefault((v, s), {}), sums)
        return out

    @property
    def full_weeks(self) -> dict[tuple[str, int], int]:
        """Units per arm × full weeks exposed (all allocation periods)."""
        out: dict[tuple[str, int], int] = {}
        for (v, f, _), n in self.full_week_cells.items():
            out[(v, f)] = out.get((v, f), 0) + n
        return out

    def arm(self, variant: str, groups: set[str] | None = None) -> dict[str, float]:
        """The sums of one arm over all (or some) customer groups."""
        total: dict[str, float] = {}
        for (v, g), sums in self.by_group.items():
            if v == variant and (groups is None or g in groups):
                add_sums(total, sums)
        return total

    def arm_in_period(self, variant: str, period: int, groups: set[str] | None = None) -> dict[str, float]:
        """The sums of one arm's units assigned in one allocation period, over all (or some) groups."""
        total: dict[str, float] = {}
        for (v, g, p), sums in self.by_cell.items():
            if v == variant and p == period and (groups is None or g in groups):
                add_sums(total, sums)
        return total


def add_sums(total: dict[str, float], sums: dict[str, float]) -> None:
    """Add one slice's sums into `total` (sums of units are additive across slices)."""
    for k, x in sums.items():
        total[k] = total.get(k, 0.0) + x


class Runner(Protocol):
    """Where a cube's statements run: the statements are built for `dialect` and read back as dicts."""

    name: str  # the engine, as a run records it
    dialect: str  # the SQL dialect the statements are built for (sqlite or postgresql)
    joins: str  # how the unit rows joined (after `units`)

    def group(self, session: Session) -> ColumnElement:
        """The customer's group in the unit rows."""

    def rows(self, stmt: Select) -> list[dict[str, Any]]:
        """The statement's rows, each a dict by label."""

    def units(self, stmt: Select, units: int) -> AbstractContextManager[Table]:
        """The unit rows made once into a table `pilot_units` for the block (dropped after)."""


class DatabaseRunner:
    """The default engine: the statements run in Pilot's own database, in the caller's transaction."""

    name = "database"

    def __init__(self, session: Session) -> None:
        self.conn = session.connection()
        self.dialect = self.conn.dialect.name
        self.joins = "hash"

    def group(self, session: Session) -> ColumnElement:
        return group_case(saved_groups(session))

    def rows(self, stmt: Select) -> list[dict[str, Any]]:
        return [dict(r._mapping) for r in self.conn.execute(stmt)]

    @contextmanager
    def units(self, stmt: Select, units: int) -> Iterator[Table]:
        conn = self.conn
        Table("pilot_units", MetaData()).drop(conn, checkfirst=True)
        create = CreateTableAs(stmt, "pilot_units", temporary=True)
        if _most_customers(conn, units):
            self.joins = "merge"
        with set_based_plan(conn, sorted_groups=True, merge_joins=self.joins == "merge"):
            conn.execute(create)
        try:
            if self.dialect == "postgresql":
                conn.execute(text("ANALYZE pilot_units"))
            else:  # SQLite joins per-customer sums (the defined metrics' weeks) by a lookup: give it one
                conn.execute(text("CREATE INDEX ix_pilot_units_customer ON pilot_units (customer_id)"))
            yield create.table
        finally:
            create.table.drop(conn)


def _cost_sql(pilot: Pilot, variant: ColumnElement, spend_before: ColumnElement | None) -> ColumnElement:
    """Modelled cost of one sale by the variant's mechanic (pilot.mechanics.transaction_cost in SQL)."""
    t = Transaction
    whens = []
    amount = cast(t.amount, Float)
    for v in pilot.programme.variants:
        p = v.parameters or {}
        if v.mechanic == "fixed_discount":
            expr = amount * p["rate"]
        elif v.mechanic == "personal_card":
            expr = amount * p["expected_discount_rate"]
        elif v.mechanic == "club_membership":
            expr = amount * p.get("discount_rate", 0.0)
        elif v.mechanic == "cumulative_bonus":
            expr = amount * (p["points_per_unit"] * p["point_value"] * (1 - p["breakage"]))
        elif v.mechanic == "progressive_discount":
            bands = sorted(p["bands"], key=lambda b: -b["min_spend"])
            expr = case(*[(amount >= b["min_spend"], amount * b["rate"]) for b in bands], else_=0.0)
        elif v.mechanic == "gifts_lottery":
            expr = case((amount >= p.get("min_spend", 0.0), literal(p["win_probability"] * p["prize_value"])),
                        else_=0.0)
        elif v.mechanic == "tiered" and spend_before is not None:
            tiers = sorted(p["tiers"], key=lambda x: -x["threshold"])
            expr = case(*[(spend_before >= x["threshold"], amount * x["discount_rate"]) for x in tiers], else_=0.0)
        else:
            continue
        whens.append((variant == v.key, expr))
    modelled = case(*whens, else_=0.0) if whens else literal(0.0)
    return func.coalesce(cast(t.discount_cost, Float), case((t.amount > 0, modelled), else_=0.0))


def _period_costs(pilot: Pilot) -> list[tuple[str, float, int]]:
    """(variant, cost per member per period, period days) of membership-style mechanics."""
    out = []
    for v in pilot.programme.variants:
        p = v.parameters or {}
        if "period_days" in p and "cost_per_member_per_period" in p:
            out.append((v.key, member_period_cost(v.mechanic, p), p["period_days"]))
    return out


def _stage_units(session: Session, pilot: Pilot, stage: Stage, cutoff: datetime) -> tuple[int, int]:
    """The stage's units before the cut-off, and the full weeks since its earliest exposure (the
    weekly columns the unit rows need)."""
    a = Assignment
    first, units = session.execute(select(func.min(a.assigned_at), func.count()).where(
        a.pilot_id == pilot.id, a.stage == stage.position, a.assigned_at < cutoff)).one()
    return units, int((cutoff - first).total_seconds() // WEEK) if first is not None else 0


MERGE_SHARE = 0.5  # units of the stage / customers from which the unit rows merge-join (query_plans.set_based_plan)


def _most_customers(conn, units: int) -> bool:
    """Whether the stage's units are at least MERGE_SHARE of the customers (PostgreSQL's estimate of
    the table's rows, kept by ANALYZE and autovacuum; never analysed: no)."""
    if conn.dialect.name != "postgresql":
        return False
    rows = conn.scalar(text("SELECT reltuples FROM pg_class WHERE oid = CAST('customers' AS regclass)"))
    return rows is not None and rows > 0 and units >= MERGE_SHARE * rows


def unit_rows(session: Session, pilot: Pilot, stage: Stage, cutoff: datetime, pre_days: int, weeks: int,
              period_ends: list[datetime] | None = None, dialect: str | None = None,
              group: ColumnElement | None = None, defined: list[dict[str, Any]] | None = None) -> Select:
    """One row per assigned customer of the stage: its arm, group, store, metric values and, for each
    week since exposure, its values of that week (WEEK_VALUES: spend, visits, items, cost).

    One pass over the transactions of the window: joined to the stage's assignments (a hash join,
    parallel on PostgreSQL) and grouped by customer, every value a conditional sum over the same
    rows. The assignments are then LEFT JOINed to those sums, so a customer who bought nothing is a
    row of zeros. Amounts are summed as floats (PostgreSQL's numeric sums cost twice the time).
    `period`: the allocation period the unit was assigned in (0 before the first of `period_ends`).
    `dialect`: the SQL to build (default: the session's); `group`: the customer's group (default: the
    saved groups' CASE over the customer's attributes); `defined`: the run's defined metrics, whose
    per-unit columns (pilot.metric_columns) come from one more pass per source, LEFT JOINed the same way.
    """
    dialect = dialect or session.bind.dialect.name
    group = group if group is not None else group_case(saved_groups(session))
    pg = dialect == "postgresql"
    a, t = Assignment, Transaction
    pre_start = pilot.started_at - timedelta(days=pre_days)
    first = min(pre_start, stage.started_at or pre_start)
    now_s = epoch_seconds(time_literal(cutoff, dialect), dialect)
    stage_units = and_(a.pilot_id == pilot.id, a.stage == stage.position, a.assigned_at < cutoff)
    spend_before = None
    tiered = {v.key: (v.parameters or {}).get("period_days", 90) for v in pilot.programme.variants
              if v.mechanic == "tiered"}
    if tiered:
        # a tier is reached by the spend of the current period (`period_days`, counted from the
        # customer's exposure): the customer's earlier sales of the same period, refunds included
        window = t.occurred_at >= a.assigned_at
        period_seconds = case(*[(a.variant == k, days * 86400.0) for k, days in tiered.items()], else_=1e12)
        period = func.floor((epoch_seconds(t.occurred_at, dialect) - epoch_seconds(a.assigned_at, dialect))
                            / period_seconds)
        spend_before = func.coalesce(func.sum(case((window, t.amount), else_=0.0)).over(
            partition_by=(t.customer_id, period), order_by=(t.occurred_at, t.id), rows=(None, -1)), 0.0)
    # per transaction: what every sum below reads; on SQLite materialised, so the julianday
    # arithmetic runs once per row, on PostgreSQL inlined into the parallel aggregate
    tx = (select(a.customer_id, a.assigned_at, t.occurred_at, cast(t.amount, Float).label("amount"),
                 t.items, (t.type == "sale").label("sale"),
                 cast(_cost_sql(pilot, a.variant, spend_before), Float).label("cost"),
                 (epoch_seconds(t.occurred_at, dialect) - epoch_seconds(a.assigned_at, dialect)).label("elapsed"),
                 (now_s - epoch_seconds(a.assigned_at, dialect)).label("exposure"))
          .join(t, and_(t.customer_id == a.customer_id, t.occurred_at >= first, t.occurred_at < cutoff))
          .where(stage_units))
    tx = tx.cte("tx").prefix_with("MATERIALIZED") if dialect == "sqlite" else tx.subquery("tx")

    def after(seconds: int) -> ColumnElement:
        """The sale came at least `seconds` after the customer's exposure (0: exactly, by comparing times)."""
        if not seconds:
            return tx.c.occurred_at >= tx.c.assigned_at
        if pg:
            return at_least_after(tx.c.occurred_at, tx.c.assigned_at, seconds, dialect)
        return tx.c.elapsed >= seconds

    # FILTER rather than sum(CASE …): rows outside the condition never reach the aggregate (6% faster)
    def total(cond: ColumnElement, value: ColumnElement) -> ColumnElement:
        return func.sum(value).filter(cond)

    def count(cond: ColumnElement) -> ColumnElement:
        return func.count().filter(cond)

    post = after(0)
    pre = and_(tx.c.occurred_at >= pre_start, tx.c.occurred_at < pilot.started_at)
    sale = tx.c.sale
    sums = [total(post, tx.c.amount).label("spend"), count(and_(post, sale)).label("visits"),
            total(post, tx.c["items"]).label("items"), total(post, tx.c.cost).label("cost"),
            count(and_(post, sale, tx.c.elapsed * 2 < tx.c.exposure)).label("early"),
            count(and_(post, sale, tx.c.elapsed * 2 >= tx.c.exposure)).label("late"),
            total(pre, tx.c.amount).label("pre_spend"), count(and_(pre, sale)).label("pre_visits"),
            total(pre, tx.c["items"]).label("pre_items")]
    in_week = {"spend": lambda c: total(c, tx.c.amount), "visits": lambda c: count(and_(c, sale)),
               "items": lambda c: total(c, tx.c["items"]), "cost": lambda c: total(c, tx.c.cost)}
    for w in range(weeks):
        week = and_(after(w * WEEK), ~after((w + 1) * WEEK))
        sums += [in_week[v](week).label(week_column(v, w)) for v in WEEK_VALUES]
    per = select(tx.c.customer_id, *sums).group_by(tx.c.customer_id).subquery("per")

    exposed = now_s - epoch_seconds(a.assigned_at, dialect)
    period = _period_costs(pilot)
    member = case(*[(a.variant == k, c * exposed / (d * 86400.0)) for k, c, d in period], else_=0.0) \
        if period else literal(0.0)
    member_week = case(*[(a.variant == k, c * WEEK / (d * 86400.0)) for k, c, d in period], else_=0.0) \
        if period else literal(0.0)

    def value(name: str) -> ColumnElement:
        return cast(func.coalesce(per.c[name], 0), Float)

    def weekly_value(name: str, w: int) -> ColumnElement:
        """The unit's value in week w since exposure (cost: with the membership's cost of the week)."""
        column = value(week_column(name, w))
        return (column + member_week if name == "cost" else column).label(week_column(name, w))

    visits = value("visits")
    period = allocation_period(a.assigned_at, period_ends or [])
    cols = columns(defined or [])
    extra = [(per_customer(source, mine, a, stage_units, first, cutoff, pre_start, pilot.started_at, dialect), mine)
             for source in ("events", "transactions") if (mine := [c for c in cols if c.measure["source"] == source])]
    stmt = (select(a.customer_id, a.variant, group.label("grp"), period.label("period"),
                   func.coalesce(a.store_id, Customer.home_store_id).label("store_id"),
                   cast(func.floor(exposed / WEEK), Float).label("full_weeks"),
                   value("spend").label("spend"), visits.label("visits"), value("items").label("items"),
                   cast(value("cost") + member, Float).label("cost"),
                   cast(case((visits > 0, 1), else_=0), Float).label("converted"),
                   cast(case((and_(value("early") > 0, value("late") > 0), 1), else_=0), Float).label("retained"),
                   *[value(v).label(v) for v in ("pre_spend", "pre_visits", "pre_items")],
                   *[weekly_value(v, w) for w in range(weeks) for v in WEEK_VALUES],
                   *[unit_value(sub, c) for sub, mine in extra for c in mine])
            .join(Customer, Customer.id == a.customer_id)
            .outerjoin(per, per.c.customer_id == a.customer_id)
            .where(stage_units))
    for sub, _ in extra:
        stmt = stmt.outerjoin(sub, sub.c.customer_id == a.customer_id)
    return stmt


def _sums(unit, defined: list[dict[str, Any]] | None = None) -> list[ColumnElement]:
    cols = [func.count().label("n")]
    cols += [func.sum(unit.c[v]).label(v) for v in UNIT_VALUES + tuple(c.name for c in columns(defined or []))]
    cols += [func.sum(unit.c[a] * unit.c[b]).label(product_key(a, b))
             for a, b in PRODUCTS + tuple(products(defined or []))]
    return cols


def customer_cube(session: Session, pilot: Pilot, stage: Stage, cutoff: datetime, pre_days: int = 56,
                  weekly: str = "spend", period_ends: list[datetime] | None = None,
                  runner: Runner | None = None, defined: list[dict[str, Any]] | None = None) -> Cube:
    """Per arm × group, arm × store and arm × week since exposure (every weekly value; `weekly`, spend
    or visits, is the one the fading test follows): the unit rows are computed once into a temporary
    table (one pass over the transactions), then grouped four ways: per arm × group × allocation
    period (`period_ends`: the times the stage's weights changed before the cut-off; one period
    without), per arm × store × period, per arm × full weeks exposed and per arm × week since
    exposure. `runner`: where (default: the database);
    `defined`: the run's defined metrics (their sums join the catalogue's in every slice)."""
    runner = runner or DatabaseRunner(session)
    cube = Cube(cutoff=cutoff, pre_start=pilot.started_at - timedelta(days=pre_days))
    units, weeks = _stage_units(session, pilot, stage, cutoff)
    stmt = unit_rows(session, pilot, stage, cutoff, pre_days, weeks, period_ends, runner.dialect,
                     runner.group(session), defined)
    with runner.units(stmt, units) as unit:
        cube.joins = runner.joins
        for m in runner.rows(select(unit.c.variant, unit.c.grp, unit.c.period, *_sums(unit, defined))
                             .group_by(unit.c.variant, unit.c.grp, unit.c.period)):
            variant, grp, period = m.pop("variant"), m.pop("grp"), int(m.pop("period"))
            sums = {k: float(v or 0) for k, v in m.items()}
            cube.by_cell[(variant, grp, period)] = sums
            add_sums(cube.by_group.setdefault((variant, grp), {}), sums)
            if period_ends:
                add_sums(cube.by_period.setdefault((variant, period), {}), sums)
        store_cols = [func.count().label("n")] + [func.sum(unit.c[v]).label(v) for v in (
            "spend", "visits", "items", "cost", "converted", "retained", *(c.name for c in columns(defined or [])
                                                                           if not c.pre))]
        for m in runner.rows(select(unit.c.variant, unit.c.store_id, unit.c.period, *store_cols)
                             .group_by(unit.c.variant, unit.c.store_id, unit.c.period)):
            variant, store, period = m.pop("variant"), m.pop("store_id"), int(m.pop("period"))
            cube.store_cells[(variant, store, period)] = {k: float(v or 0) for k, v in m.items()}
        for m in runner.rows(select(unit.c.variant, unit.c.full_weeks, unit.c.period, func.count().label("n"))
                             .group_by(unit.c.variant, unit.c.full_weeks, unit.c.period)):
            cube.full_week_cells[(m["variant"], int(m["full_weeks"]), int(m["period"]))] = int(m["n"])
        cube.week_cells = _weekly(runner, unit, weeks, weekly)
        if defined and weeks:
            _defined_weeks(cube, runner, unit, pilot, stage, cutoff, pre_days, defined)
        for (variant, w, _), sums in cube.week_cells.items():
            add_sums(cube.by_week.setdefault((variant, w), {}), sums)
    return cube


def _weekly(runner: Runner, unit: Table, weeks: int, value: str) -> dict[tuple[str, int, int], dict[str, float]]:
    """Per arm × week since exposure × allocation period: Σ of each weekly value per unit-week, the
    products its tests need, and the units converted that week (a purchase in it), over the units
    exposed for the whole week (those without purchases that week add zeros). `value`: the weekly
    value whose first week against its later weeks is the fading test's contrast."""
    if not weeks:
        return {}
    cols = []
    for w in range(weeks):
        whole, x = unit.c.full_weeks > w, {v: unit.c[week_column(v, w)] for v in WEEK_VALUES}
        cols += [func.sum(case((whole, x[v]))).label(f"s{w}_{v}") for v in WEEK_VALUES]
        cols += [func.sum(case((whole, x[a] * x[b]))).label(f"s{w}_{a}_{b}") for a, b in WEEK_PRODUCTS]
        cols.append(func.sum(case((and_(whole, x["visits"] > 0), 1.0), else_=0.0)).label(f"s{w}_converted"))
    full = unit.c.full_weeks
    if weeks >= 2:  # the fading test's per-unit contrast (pilot.weekly_effects): first week − mean of the later
        # half of its full weeks (weeks w with f/2 ≤ w < f, of f full weeks)
        late = sum(case((and_(full > w, 2 * w >= full), unit.c[week_column(value, w)]), else_=0.0)
                   for w in range(1, weeks))
        fade = unit.c[week_column(value, 0)] - late / func.nullif(func.floor(full / 2), 0)
        cols += [func.sum(case((full >= 2, 1), else_=0)).label("fade_n"),
                 func.sum(case((full >= 2, fade))).label("fade"),
                 func.sum(case((full >= 2, fade * fade))).label("fade^2")]
    out: dict[tuple[str, int, int], dict[str, float]] = {}
    for m in runner.rows(select(unit.c.variant, unit.c.period, *cols).group_by(unit.c.variant, unit.c.period)):
        for w in range(weeks):
            sums = {v: float(m[f"s{w}_{v}"] or 0) for v in (*WEEK_VALUES, "converted")}
            sums.update({product_key(a, b): float(m[f"s{w}_{a}_{b}"] or 0) for a, b in WEEK_PRODUCTS})
            if any(sums.values()):
                out[(m["variant"], w, int(m["period"]))] = sums
        if m.get("fade_n") and (m["variant"], 0, int(m["period"])) in out:
            out[(m["variant"], 0, int(m["period"]))].update(
                fade_n=float(m["fade_n"]), fade=float(m["fade"] or 0), **{"fade*fade": float(m["fade^2"] or 0)})
    return out


def _defined_weeks(cube: Cube, runner: Runner, unit: Table, pilot: Pilot, stage: Stage, cutoff: datetime,
                   pre_days: int, defined: list[dict[str, Any]]) -> None:
    """The defined metrics' sums per arm × week since exposure × allocation period (into the cube's
    week cells, before by_week adds them up): per customer and week from each source, joined to the
    unit rows (pilot.metric_columns)."""
    a = Assignment
    pre_start = pilot.started_at - timedelta(days=pre_days)
    first = min(pre_start, stage.started_at or pre_start)
    units = and_(a.pilot_id == pilot.id, a.stage == stage.position, a.assigned_at < cutoff)
    cols = columns(defined)
    subs = [(per_customer(source, mine, a, units, first, cutoff, pre_start, pilot.started_at, runner.dialect,
                          by_week=True), mine)
            for source in ("events", "transactions") if (mine := [c for c in cols if c.measure["source"] == source])]
    for stmt in week_statements(unit, subs, defined):
        for m in runner.rows(stmt):
            key = (m.pop("variant"), int(m.pop("wk")), int(m.pop("period")))
            cube.week_cells.setdefault(key, {}).update({k: float(v or 0) for k, v in m.items()})


def store_cube(session: Session, pilot: Pilot, stage: Stage, cutoff: datetime, runner: Runner | None = None) -> Cube:
    """Store-randomised pilots: per store, spend, visits and items per day before and since the start
    (`runner`: where; default, the database)."""
    runner = runner or DatabaseRunner(session)
    t, e = Transaction, Enrolment
    start = stage.started_at or pilot.started_at
    days_post = max((cutoff - start).total_seconds() / 86400, 1e-9)
    pre_start = start - (cutoff - start)
    cube = Cube(cutoff=cutoff, pre_start=pre_start)
    post, pre = t.occurred_at >= start, t.occurred_at < start
    values = {"spend": (post, t.amount), "visits": (and_(post, t.type == "sale"), 1), "items": (post, t.items),
              "pre_spend": (pre, t.amount), "pre_visits": (and_(pre, t.type == "sale"), 1), "pre_items": (pre, t.items)}
    stmt = (select(e.store_id, e.arm, *[func.coalesce(func.sum(case(when, else_=0)), 0).label(name)
                                        for name, when in values.items()])
            .outerjoin(t, and_(t.store_id == e.store_id, t.occurred_at >= pre_start, t.occurred_at < cutoff))
            .where(e.pilot_id == pilot.id, e.stage_id == stage.id, e.arm.is_not(None),
                   or_(e.withdrawn_at.is_(None), e.withdrawn_at >= cutoff))  # (withdrawn at the end: counts)
            .group_by(e.store_id, e.arm))
    for m in runner.rows(stmt):
        cube.stores[(m["arm"], m["store_id"])] = {name: float(m[name]) / days_post for name in values}
    return cube
