"""Power glue: for each arm of a running stage, the effect detectable now and the units (and days)
still needed for the pilot's target MDE, from the arms' sums and experiments.power — honest about
the eligible pool: once every eligible customer of the scope is assigned, more days add exposure,
not units, so the answer says so and estimates the effect detectable at later dates instead.
Also the eligible customers of a stage's scope, which the next stage's projection uses."""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from experiments.power import mde_means, mde_proportion, sample_size_means, sample_size_proportions
from pilot.aggregation import product_sum
from pilot.analysis_config import AnalysisConfig

Plan = tuple[float, float, float | None]  # (baseline, MDE now in absolute terms, units needed in total)
LATER = (1.5, 2.0, 3.0)  # later dates, as multiples of the days run so far, the detectable effect is estimated at


@dataclass(frozen=True)
class Pool:
    """The eligible pool of a running stage: units assigned per day lately, and the eligible customers
    of the enrolled stores not assigned yet (None when not known)."""

    daily_new_units: float | None
    remaining: int | None
    days: float = 0.0

    @property
    def exhausted(self) -> bool:
        return self.remaining == 0


def power_table(config: AnalysisConfig, totals: dict[str, dict[str, float]], daily_new_units: float | None,
                reductions: dict[str, float | None] | None = None, pool: Pool | None = None) -> dict[str, Any]:
    """Per treatment arm, how far the stage is from its target MDE. A mean metric tested with CUPED
    is planned with the standard deviation CUPED leaves (sd·√(1 − variance reduction) of that arm's
    comparison): the test that will be run, not the unadjusted one. With a `pool`, the units still
    needed never exceed the eligible customers left to assign."""
    out = {}
    kind = config.info(config.primary_metric).test  # (a defined metric's too)
    c = totals[config.control]
    n_c = c.get("n", 0)
    target = config.mde
    rate = pool.daily_new_units if pool is not None else daily_new_units
    for arm in config.treatments:
        n_t = totals[arm].get("n", 0)
        if n_c < 3 or n_t < 3:
            out[arm] = {"mde_rel_now": None, "target_mde_rel": target, "units_needed": None, "message": "too_few_units"}
            continue
        reduction = (reductions or {}).get(arm) if kind == "mean" else None
        base, mde_abs, need = (_proportion_plan(config, c, n_c, n_t) if kind == "proportion"
                               else _mean_plan(config, c, n_c, n_t, reduction))
        have = n_c + n_t
        more = max(0, need - have) if need is not None else None
        days_needed = (more / rate if rate and more is not None else None)
        row = {"mde_rel_now": mde_abs / abs(base) if base else None, "mde_abs_now": mde_abs,
               "target_mde_rel": target, "units_now": int(have), "units_needed": need,
               "more_units_needed": more, "days_needed": days_needed,
               "variance_reduction": reduction,
               "powered": bool(need is not None and have >= need)}
        if pool is not None and more and pool.remaining is not None and more > pool.remaining:
            row.update(_pool_limited(config, c, row, pool))
        out[arm] = row
    return out


def _pool_limited(config: AnalysisConfig, c: dict[str, float], row: dict[str, Any], pool: Pool) -> dict[str, Any]:
    """More units are needed than the pool holds: ask only for what is left, and estimate the effect
    detectable at later dates from the observed variance (the same units, longer exposure)."""
    left = pool.remaining or 0
    share = _persistent_share(c)
    later = []
    if row["mde_rel_now"] is not None and pool.days > 0:
        units_then = row["units_now"] + left
        for k in LATER:
            # CV² of a unit's total over k× the exposure: the persistent part stays, purchase noise falls as 1/k;
            # the remaining units (if any) arrive and count fully (an optimistic bound)
            scale = math.sqrt(share + (1 - share) / k) * math.sqrt(row["units_now"] / units_then)
            later.append({"days": round(pool.days * k, 1), "mde_rel": row["mde_rel_now"] * scale})
    reachable = next((p for p in later if p["mde_rel"] <= config.mde), None)
    noun = f"all {row['units_now'] + left:,} eligible customers of the scope are assigned" if not left else \
        f"only {left:,} eligible customers of the scope are left to assign"
    if reachable:
        verdict = (f"at about {reachable['days']:.0f} days the detectable effect is about "
                   f"{reachable['mde_rel']:.1%}, within the target {config.mde:.1%}")
    elif later:
        verdict = (f"even at {later[-1]['days']:.0f} days the detectable effect is about {later[-1]['mde_rel']:.1%}: "
                   f"the pilot cannot reach the target MDE {config.mde:.1%} in its scope — widen the scope "
                   f"(more stores or customer groups) or accept a larger MDE")
    else:
        verdict = "the pilot cannot reach the target MDE in its scope"
    return {"more_units_needed": left, "days_needed": (left / pool.daily_new_units) if left and pool.daily_new_units
            else None, "pool_exhausted": not left, "pool_remaining": left, "mde_rel_later": later,
            "reachable_in_scope": reachable is not None, "persistent_share": share,
            "message": "pool_exhausted" if not left else "pool_too_small",
            "explanation": f"More units are needed than the pool holds: {noun}; more days lengthen exposure, they "
                           f"add no units. From the observed variance, {verdict}."}


def _persistent_share(c: dict[str, float]) -> float:
    """The share of a unit's variance that persists with exposure, from its visits: Poisson purchase
    noise is var = mean, the rest is the customers' differing rates."""
    n = c.get("n", 0)
    if n < 2:
        return 1.0
    mean = c.get("visits", 0.0) / n
    var = product_sum(c, "visits", "visits") / n - mean**2
    return min(max((var - mean) / var, 0.0), 1.0) if var > 0 else 1.0


def _proportion_plan(config: AnalysisConfig, c: dict[str, float], n_c: float, n_t: float) -> Plan:
    p = c.get(config.info(config.primary_metric).value, 0.0) / n_c
    if not 0 < p < 1:
        return p, math.inf, None
    need = sample_size_proportions(p, min(p * (1 + config.mde), 0.999), config.power, config.alpha, n_t / n_c).n_total
    return p, mde_proportion(p, n_c, n_t, config.power, config.alpha), need


def _mean_plan(config: AnalysisConfig, c: dict[str, float], n_c: float, n_t: float,
               reduction: float | None) -> Plan:
    """Means, and ratios planned on spend per unit."""
    info = config.info(config.primary_metric)
    value = info.value if info.test == "mean" or info.defined else "spend"
    mean = c.get(value, 0.0) / n_c
    sd = math.sqrt(max(product_sum(c, value, value) / n_c - mean**2, 0) * n_c / (n_c - 1))
    if reduction is not None and 0 < reduction < 1:
        sd *= math.sqrt(1 - reduction)
    mde_abs = mde_means(sd, n_c, n_t, config.power, config.alpha) if sd > 0 else math.inf
    need = sample_size_means(config.mde * mean, sd, config.power, config.alpha, n_t / n_c).n_total \
        if sd > 0 and mean else None
    return mean, mde_abs, need


def eligible_customers(session: Session, stage) -> int:
    """Customers whose home store is in the stage's scope and whose group is eligible for it."""
    from pilot.customer_groups import group_case, saved_groups
    from pilot.models import Customer
    from pilot.rollout import scope_stores

    ids = [s.id for s in scope_stores(session, stage)]
    if not ids:
        return 0
    stmt = select(func.count()).select_from(Customer).where(Customer.home_store_id.in_(ids))
    if stage.eligible_groups is not None:
        stmt = stmt.where(group_case(saved_groups(session)).in_(stage.eligible_groups))
    return int(session.scalar(stmt) or 0)


def stage_pool(session: Session, pilot, stage, cutoff: datetime) -> Pool | None:
    """The current stage's pool: assignments a day over the last week, and the eligible customers of
    its enrolled stores not yet assigned (by the assignment rule's own reasons; holdout and other
    pilots of the layer excluded). None for a store pilot or a stage that is not the current one."""
    from pilot.assignment import assignment_counts, holdout
    from pilot.models import Assignment

    if pilot.unit != "customer" or stage.position != pilot.current_stage:
        return None
    week = session.scalar(select(func.count()).select_from(Assignment).where(
        Assignment.pilot_id == pilot.id, Assignment.stage == stage.position,
        Assignment.assigned_at >= cutoff - timedelta(days=7), Assignment.assigned_at < cutoff)) or 0
    remaining = assignment_counts(session, pilot, holdout())["reasons"].get("not_yet_assigned", 0)
    start = stage.started_at or pilot.started_at
    days = max((cutoff - start).total_seconds() / 86400, 0.0) if start else 0.0
    return Pool(week / 7 if week else None, int(remaining), days)
