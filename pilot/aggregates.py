"""Sufficient statistics of a pilot stage, computed inside the database with one SQL layer.

Every assigned unit counts, buyers or not: units come from `assignments` and transactions are
LEFT JOINed, so a customer who bought nothing is a row of zeros, not a missing row. A first
`GROUP BY` gives one row per unit (its metric values in the window and in the pre-period); the
statements here aggregate those rows per arm × customer group, per arm × store and per arm × week
since exposure. Raw transactions never come into Python. The same SQLAlchemy Core runs on SQLite
and PostgreSQL.

Windows: a customer's outcome window runs from their assignment (exposure) to the cut-off; the
pre-period is the `pre_days` before the pilot started (the CUPED covariate). Programme cost is the
feed's `discount_cost` where sent, else the variant's cost model (pilot.mechanics) in SQL, plus the
member-period cost of membership mechanics pro rata over the exposure.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import (Column, Float, Integer, MetaData, String, Table, and_, case, cast, func, insert, literal, or_,
                        select, text)
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from pilot.mechanics import member_period_cost
from pilot.models import Assignment, Customer, Enrolment, Pilot, Stage, Transaction
from pilot.segments import group_case, saved_groups
from pilot.sqltime import epoch_seconds, time_literal

WEEK = 7 * 86400
# per-unit values and the sums of squares and cross-products each statistic needs
UNIT_VALUES = ("spend", "visits", "items", "cost", "converted", "retained", "pre_spend", "pre_visits", "pre_items")
PRODUCTS = (("spend", "spend"), ("visits", "visits"), ("items", "items"), ("cost", "cost"),
            ("spend", "visits"), ("items", "visits"), ("pre_spend", "pre_spend"), ("pre_visits", "pre_visits"),
            ("spend", "pre_spend"), ("visits", "pre_visits"), ("pre_items", "pre_items"), ("items", "pre_items"),
            ("pre_spend", "pre_visits"), ("spend", "pre_visits"), ("visits", "pre_spend"), ("items", "pre_visits"),
            ("visits", "pre_items"), ("pre_items", "pre_visits"))


def product_key(a: str, b: str) -> str:
    return f"{a}*{b}"


@dataclass
class Cube:
    """The sufficient statistics of one stage: plain numbers keyed by arm and slice."""

    by_group: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    by_store: dict[tuple[str, int], dict[str, float]] = field(default_factory=dict)
    by_week: dict[tuple[str, int], dict[str, float]] = field(default_factory=dict)
    full_weeks: dict[tuple[str, int], int] = field(default_factory=dict)
    stores: dict[tuple[str, int], dict[str, float]] = field(default_factory=dict)  # store pilots: per store
    cutoff: datetime | None = None
    pre_start: datetime | None = None

    def arm(self, variant: str, groups: set[str] | None = None) -> dict[str, float]:
        """The sums of one arm over all (or some) customer groups."""
        total: dict[str, float] = {}
        for (v, g), sums in self.by_group.items():
            if v == variant and (groups is None or g in groups):
                for k, x in sums.items():
                    total[k] = total.get(k, 0.0) + x
        return total


def _cost_sql(pilot: Pilot, variant: ColumnElement, spend_before: ColumnElement | None) -> ColumnElement:
    """Modelled cost of one sale by the variant's mechanic (pilot.mechanics.transaction_cost in SQL)."""
    t = Transaction
    whens = []
    for v in pilot.programme.variants:
        p = v.parameters or {}
        amount = t.amount
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
    return func.coalesce(t.discount_cost, case((t.amount > 0, modelled), else_=0.0))


def _period_costs(pilot: Pilot) -> list[tuple[str, float, int]]:
    """(variant, cost per member per period, period days) of membership-style mechanics."""
    out = []
    for v in pilot.programme.variants:
        p = v.parameters or {}
        if "period_days" in p and "cost_per_member_per_period" in p:
            out.append((v.key, member_period_cost(v.mechanic, p), p["period_days"]))
    return out


def unit_rows(session: Session, pilot: Pilot, stage: Stage, cutoff: datetime, pre_days: int):
    """One row per assigned customer of the stage: its arm, group, store and metric values.

    Buyers come from one pass over their transactions (the (customer, time) index) grouped by
    customer; customers without a transaction since the pre-period started are added as zeros with
    UNION ALL, so no large intermediate result is ever joined back.
    """
    dialect = session.bind.dialect.name
    a, t = Assignment, Transaction
    pre_start = pilot.started_at - timedelta(days=pre_days)
    first = min(pre_start, stage.started_at or pre_start)
    group = group_case(saved_groups(session)).label("grp")
    units = (select(a.customer_id, a.variant, a.assigned_at, func.coalesce(a.store_id, Customer.home_store_id)
                    .label("store_id"), group)
             .join(Customer, Customer.id == a.customer_id)
             .where(a.pilot_id == pilot.id, a.stage == stage.position, a.assigned_at < cutoff)).subquery("u")
    in_range = and_(t.customer_id == units.c.customer_id, t.occurred_at >= first, t.occurred_at < cutoff)
    spend_before = None
    if any(v.mechanic == "tiered" for v in pilot.programme.variants):
        window = t.occurred_at >= units.c.assigned_at
        spend_before = func.coalesce(func.sum(case((window, t.amount), else_=0.0)).over(
            partition_by=t.customer_id, order_by=(t.occurred_at, t.id), rows=(None, -1)), 0.0)
    tx = (select(units.c.customer_id, units.c.variant, units.c.grp, units.c.store_id, units.c.assigned_at,
                 t.occurred_at, t.amount, t.items, t.type, _cost_sql(pilot, units.c.variant, spend_before).label("cost"))
          .select_from(units).join(t, in_range)).subquery("tx")
    now_s = epoch_seconds(time_literal(cutoff, dialect), dialect)

    def full_weeks(assigned: ColumnElement) -> ColumnElement:
        return cast(func.floor((now_s - epoch_seconds(assigned, dialect)) / WEEK), Float).label("full_weeks")

    def member(variant: ColumnElement, assigned: ColumnElement) -> ColumnElement:
        period = _period_costs(pilot)
        if not period:
            return literal(0.0)
        exposed = now_s - epoch_seconds(assigned, dialect)
        return case(*[(variant == k, c * exposed / (d * 86400.0)) for k, c, d in period], else_=0.0)

    start_s = epoch_seconds(tx.c.assigned_at, dialect)
    mid_s = (start_s + now_s) / 2
    tx_s = epoch_seconds(tx.c.occurred_at, dialect)
    post = tx.c.occurred_at >= tx.c.assigned_at
    pre = and_(tx.c.occurred_at >= pre_start, tx.c.occurred_at < pilot.started_at)
    sale = tx.c.type == "sale"

    def total(cond, value) -> ColumnElement:  # noqa: ANN001
        return func.coalesce(func.sum(case((cond, value), else_=0)), 0)

    visits = total(and_(post, sale), 1)
    keys = (tx.c.customer_id, tx.c.variant, tx.c.grp, tx.c.store_id, tx.c.assigned_at)
    buyers = select(
        *keys[:4], full_weeks(tx.c.assigned_at),
        cast(total(post, tx.c.amount), Float).label("spend"),
        cast(visits, Float).label("visits"),
        cast(total(post, tx.c["items"]), Float).label("items"),
        cast(total(post, tx.c.cost) + func.max(member(tx.c.variant, tx.c.assigned_at)), Float).label("cost"),
        cast(case((visits > 0, 1), else_=0), Float).label("converted"),
        cast(case((and_(total(and_(post, sale, tx_s < mid_s), 1) > 0, total(and_(post, sale, tx_s >= mid_s), 1) > 0),
                   1), else_=0), Float).label("retained"),
        cast(total(pre, tx.c.amount), Float).label("pre_spend"),
        cast(total(and_(pre, sale), 1), Float).label("pre_visits"),
        cast(total(pre, tx.c["items"]), Float).label("pre_items"),
    ).group_by(*keys)
    zero = cast(literal(0.0), Float)
    others = select(
        units.c.customer_id, units.c.variant, units.c.grp, units.c.store_id, full_weeks(units.c.assigned_at),
        zero.label("spend"), zero.label("visits"), zero.label("items"),
        cast(member(units.c.variant, units.c.assigned_at), Float).label("cost"), zero.label("converted"),
        zero.label("retained"), zero.label("pre_spend"), zero.label("pre_visits"), zero.label("pre_items"),
    ).where(~select(t.id).where(in_range).exists())
    return buyers.union_all(others)


def _sums(unit) -> list[ColumnElement]:  # noqa: ANN001
    cols = [func.count().label("n")]
    cols += [func.sum(unit.c[v]).label(v) for v in UNIT_VALUES]
    cols += [func.sum(unit.c[a] * unit.c[b]).label(product_key(a, b)) for a, b in PRODUCTS]
    return cols


def customer_cube(session: Session, pilot: Pilot, stage: Stage, cutoff: datetime, pre_days: int = 56) -> Cube:
    """Per arm × group, arm × store and arm × week: the unit rows are computed once into a
    temporary table (one pass over the transactions), then grouped three ways."""
    cube = Cube(cutoff=cutoff, pre_start=pilot.started_at - timedelta(days=pre_days))
    conn = session.connection()
    unit = Table("pilot_units", MetaData(), Column("customer_id", Integer), Column("variant", String(64)),
                 Column("grp", String(64)), Column("store_id", Integer), Column("full_weeks", Float),
                 *[Column(v, Float) for v in UNIT_VALUES], prefixes=["TEMPORARY"])
    unit.drop(conn, checkfirst=True)
    unit.create(conn)
    try:
        conn.execute(insert(unit).from_select([c.name for c in unit.columns],
                                              unit_rows(session, pilot, stage, cutoff, pre_days)))
        if conn.dialect.name == "postgresql":
            conn.execute(text("ANALYZE pilot_units"))
        for r in conn.execute(select(unit.c.variant, unit.c.grp, *_sums(unit)).group_by(unit.c.variant, unit.c.grp)):
            m = dict(r._mapping)
            key = (m.pop("variant"), m.pop("grp"))
            cube.by_group[key] = {k: float(v or 0) for k, v in m.items()}
        store_cols = [func.count().label("n")] + [func.sum(unit.c[v]).label(v) for v in (
            "spend", "visits", "items", "cost", "converted", "retained")]
        for r in conn.execute(select(unit.c.variant, unit.c.store_id, *store_cols)
                              .group_by(unit.c.variant, unit.c.store_id)):
            m = dict(r._mapping)
            key = (m.pop("variant"), m.pop("store_id"))
            cube.by_store[key] = {k: float(v or 0) for k, v in m.items()}
        for variant, weeks, n in conn.execute(select(unit.c.variant, unit.c.full_weeks, func.count())
                                              .group_by(unit.c.variant, unit.c.full_weeks)):
            cube.full_weeks[(variant, int(weeks))] = int(n)
    finally:
        unit.drop(conn)
    cube.by_week = weekly(session, pilot, stage, cutoff)
    return cube


def weekly(session: Session, pilot: Pilot, stage: Stage, cutoff: datetime) -> dict[tuple[str, int], dict[str, float]]:
    """Per arm × week since exposure: Σ and Σ² of spend and visits per unit-week, over units that
    were exposed for the whole week (units without purchases add zeros, counted by full_weeks)."""
    dialect = session.bind.dialect.name
    a, t = Assignment, Transaction
    cut_s = epoch_seconds(time_literal(cutoff, dialect), dialect)
    start_s = epoch_seconds(a.assigned_at, dialect)
    week = cast(func.floor((epoch_seconds(t.occurred_at, dialect) - start_s) / WEEK), Float).label("week")
    per = (select(a.variant, a.customer_id, week, func.sum(t.amount).label("spend"),
                  func.sum(case((t.type == "sale", 1), else_=0)).label("visits"))
           .join(t, and_(t.customer_id == a.customer_id, t.occurred_at >= a.assigned_at, t.occurred_at < cutoff))
           .where(a.pilot_id == pilot.id, a.stage == stage.position, a.assigned_at < cutoff,
                  func.floor((cut_s - start_s) / WEEK) > week)
           .group_by(a.variant, a.customer_id, week)).subquery("pw")
    out = {}
    for r in session.execute(select(per.c.variant, per.c.week, func.sum(per.c.spend), func.sum(per.c.spend * per.c.spend),
                                    func.sum(per.c.visits), func.sum(per.c.visits * per.c.visits))
                             .group_by(per.c.variant, per.c.week)):
        out[(r[0], int(r[1]))] = {"spend": float(r[2] or 0), "spend*spend": float(r[3] or 0),
                                  "visits": float(r[4] or 0), "visits*visits": float(r[5] or 0)}
    return out


def store_cube(session: Session, pilot: Pilot, stage: Stage, cutoff: datetime) -> Cube:
    """Store-randomised pilots: per store, spend, visits and items per day before and since the start."""
    t, e = Transaction, Enrolment
    start = stage.started_at or pilot.started_at
    days_post = max((cutoff - start).total_seconds() / 86400, 1e-9)
    pre_start = start - (cutoff - start)
    cube = Cube(cutoff=cutoff, pre_start=pre_start)
    post, pre = t.occurred_at >= start, t.occurred_at < start
    stmt = (select(e.store_id, e.arm,
                   func.coalesce(func.sum(case((post, t.amount), else_=0)), 0),
                   func.coalesce(func.sum(case((and_(post, t.type == "sale"), 1), else_=0)), 0),
                   func.coalesce(func.sum(case((post, t.items), else_=0)), 0),
                   func.coalesce(func.sum(case((pre, t.amount), else_=0)), 0),
                   func.coalesce(func.sum(case((and_(pre, t.type == "sale"), 1), else_=0)), 0),
                   func.coalesce(func.sum(case((pre, t.items), else_=0)), 0))
            .outerjoin(t, and_(t.store_id == e.store_id, t.occurred_at >= pre_start, t.occurred_at < cutoff))
            .where(e.pilot_id == pilot.id, e.stage_id == stage.id, e.arm.is_not(None),
                   or_(e.withdrawn_at.is_(None), e.withdrawn_at > cutoff))
            .group_by(e.store_id, e.arm))
    for store_id, arm, spend, visits, items, pre_spend, pre_visits, pre_items in session.execute(stmt):
        cube.stores[(arm, store_id)] = {"spend": float(spend) / days_post, "visits": float(visits) / days_post,
                                        "items": float(items) / days_post, "pre_spend": float(pre_spend) / days_post,
                                        "pre_visits": float(pre_visits) / days_post,
                                        "pre_items": float(pre_items) / days_post}
    return cube
