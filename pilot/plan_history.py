"""The planner's reading of the retailer's history, in SQLAlchemy Core for SQLite and PostgreSQL.

Two passes over the transactions before the planned start: one grouped by customer (the eligible
customers' values in the historical window that stands in for the pilot, their pre-period covariate,
and whether they were active before it and now), one grouped by store and week (the stores' weekly
sales, for store pilots). The per-customer rows are sums per unit, not raw transactions: the
simulation on history needs each unit's value to randomise.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from flask import current_app
from sqlalchemy import Float, and_, case, cast, func, literal, select, text
from sqlalchemy.orm import Session

from pilot.customer_groups import group_case, saved_groups
from pilot.models import Customer, Store, Transaction
from pilot.query_plans import set_based_plan
from pilot.sqltime import epoch_seconds, time_literal
from pilot.store_power import StoreHistory

WEEK = timedelta(weeks=1)


# per catalogue metric: the per-unit columns the planner reads (named as pilot.aggregation's unit rows;
# `…_sq`: Σ of the squared per-purchase value, the purchase noise the duration model needs)
METRIC_COLUMNS = {"spend_per_customer": ("spend", "pre_spend", "spend_sq"),
                  "visits_per_customer": ("visits", "pre_visits"),
                  "discount_cost_per_customer": ("cost", "cost_sq"),
                  "conversion": ("visits",), "retention": ("visits", "early", "late"),
                  "spend_per_visit": ("spend", "visits", "pre_spend", "pre_visits", "spend_sq"),
                  "items_per_basket": ("items", "visits", "pre_items", "pre_visits", "items_sq")}


@dataclass(frozen=True)
class Cohort:
    """The eligible customers active before the historical window (the units a pilot starting then
    would have had), with their values, and the counts at the planned start."""

    values: dict[str, np.ndarray]  # per unit, the metric's columns (METRIC_COLUMNS) over the window / pre-period
    store: np.ndarray  # home store id
    eligible_now: int  # eligible customers active in the scope's stores in the `history_weeks` before the start
    new_per_week: float  # of them, those not active in the `history_weeks` before that, per week
    window_start: datetime
    pre_start: datetime
    first_transaction: datetime | None

    def __len__(self) -> int:
        return len(self.store)


def cohort(session: Session, store_ids: list[int], groups: list[str] | None, start: datetime, weeks: int,
           history_weeks: int, pre_days: int, metric: str) -> Cohort:
    """The cohort of a pilot of `weeks` that would have started `weeks` before `start`."""
    t = Transaction
    s = start - weeks * WEEK
    pre_start = s - timedelta(days=pre_days)
    columns = METRIC_COLUMNS[metric]
    stmt = statement(session, store_ids, groups, start, weeks, history_weeks, pre_days, columns)
    if session.bind.dialect.name == "postgresql":  # as pilot.analysis_runs does for its per-customer sums
        work_mem = current_app.config.get("ANALYSIS_WORK_MEM", "64MB") if current_app else "64MB"
        if work_mem:
            session.execute(text("SELECT set_config('work_mem', :v, true)"), {"v": work_mem})
        session.execute(text("SET LOCAL jit = off"))  # compiling the wide aggregate per worker costs seconds
    with set_based_plan(session.connection(), sorted_groups=True):  # per-customer sums: sorted partial aggregates
        rows = session.execute(stmt).all()
    # (numpy reads plain tuples fast; from SQLAlchemy rows it takes ~20 µs each, 20 s for a million customers)
    arr = np.array([tuple(r)[1:] for r in rows], dtype=float).reshape(-1, len(columns) + 4)
    k = len(columns) + 1
    in_cohort = arr[:, k] > 0
    now, before = arr[:, k + 1] > 0, arr[:, k + 2] > 0
    # the earliest sale matters only when the history does not reach back over the pre-period (one probe else)
    covered = session.scalar(select(t.id).where(t.store_id.in_(store_ids), t.occurred_at < pre_start).limit(1))
    first = None if covered is not None or not store_ids else session.scalar(
        select(func.min(t.occurred_at)).where(t.store_id.in_(store_ids)))
    values = {name: arr[in_cohort, 1 + i] for i, name in enumerate(columns)}
    return Cohort(values, arr[in_cohort, 0].astype(int), int(now.sum()),
                  float((now & ~before).sum()) / history_weeks, s, pre_start, first)


def statement(session: Session, store_ids: list[int], groups: list[str] | None, start: datetime, weeks: int,
              history_weeks: int, pre_days: int, columns: tuple[str, ...]):
    """One row per eligible customer who bought in the history read: customer, home store, the `columns`
    (METRIC_COLUMNS) over the window or pre-period, and whether active before the window, now, and before that."""
    t, c = Transaction, Customer
    s = start - weeks * WEEK
    pre_start = s - timedelta(days=pre_days)
    active_from, before_from = s - history_weeks * WEEK, start - 2 * history_weeks * WEEK
    low = min(pre_start, active_from, before_from)
    # the scope as a joined row set, not an IN list tested per transaction (three times, in each CASE)
    scope = select(Store.id.label("id")).where(Store.id.in_(store_ids)).subquery("scope")
    home = select(Store.id.label("id")).where(Store.id.in_(store_ids)).subquery("home")
    in_scope = scope.c.id.is_not(None)

    def between(a: datetime, b: datetime):
        return and_(t.occurred_at >= a, t.occurred_at < b)

    def total(cond, v):
        return func.sum(case((cond, v), else_=0.0))

    def seen(cond):
        return func.max(case((and_(cond, in_scope), 1), else_=0))
    amount, items = cast(t.amount, Float), cast(t.items, Float)
    cost = func.coalesce(cast(t.discount_cost, Float), 0.0)
    sale = case((t.type == "sale", 1.0), else_=0.0)
    window, pre, mid = between(s, start), between(pre_start, s), s + (start - s) / 2
    # the retention halves as pilot.aggregation splits a customer's exposure: before and after its middle
    exprs = {"spend": (window, amount), "pre_spend": (pre, amount), "spend_sq": (window, amount * amount),
             "visits": (window, sale), "pre_visits": (pre, sale), "items": (window, items), "pre_items": (pre, items),
             "items_sq": (window, items * items), "cost": (window, cost), "cost_sq": (window, cost * cost),
             "early": (between(s, mid), sale), "late": (between(mid, start), sale)}
    eligible = [group_case(saved_groups(session)).in_(groups)] if groups is not None else []
    stmt = (select(t.customer_id, c.home_store_id, *[total(*exprs[name]) for name in columns],
                   seen(between(active_from, s)).label("cohort"),
                   seen(between(start - history_weeks * WEEK, start)).label("now"),
                   seen(between(before_from, start - history_weeks * WEEK)))
            .join(c, c.id == t.customer_id).join(home, home.c.id == c.home_store_id)
            .outerjoin(scope, scope.c.id == t.store_id)
            .where(t.occurred_at >= low, t.occurred_at < start, *eligible)
            .group_by(t.customer_id, c.home_store_id))
    return stmt


def store_history(session: Session, stores: list[tuple[int, str, str]], start: datetime, weeks: int) -> StoreHistory:
    """Weekly sales of (id, code, region) stores over the `weeks` before `start` (oldest first)."""
    dialect = session.bind.dialect.name
    t = Transaction
    ids = [s[0] for s in stores]
    since = (epoch_seconds(time_literal(start, dialect), dialect) - epoch_seconds(t.occurred_at, dialect))
    week_ago = cast(func.floor(since / literal(WEEK.total_seconds())), Float)
    rows = session.execute(
        select(t.store_id, week_ago, func.sum(cast(t.amount, Float)))
        .where(t.store_id.in_(ids), t.occurred_at >= start - weeks * WEEK, t.occurred_at < start)
        .group_by(t.store_id, week_ago)).all() if ids else []
    index = {sid: i for i, sid in enumerate(ids)}
    weekly = np.zeros((len(ids), weeks))
    for store_id, ago, total in rows:
        k = int(ago)
        if 0 <= k < weeks:
            weekly[index[store_id], weeks - 1 - k] += float(total or 0.0)
    return StoreHistory([s[1] for s in stores], [s[2] for s in stores], weekly)
