"""Store-level randomisation in matched strata, the balance table that shows it worked, and the
pre-period values both use.

Within each region, stores are sorted by pre-period sales and cut into consecutive blocks
(strata) as large as the allocation needs; each block gets the arms in a shuffled order drawn
from the salt, so treatment and control stores look alike before the pilot. A store's pre-period
value is its sales before the pilot where known, else its floor size.
"""
from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime, timedelta
from fractions import Fraction

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pilot.bucketing import variant_for
from pilot.db import utcnow
from pilot.models import Store, Transaction

PRE_DAYS = 56


def pre_period_values(session: Session, stores: list[Store], before: datetime | None) -> dict[str, float]:
    """Each store's sales in the 56 days before `before`; floor size when no store has any yet."""
    end = before or utcnow()
    ids = {s.id: s.code for s in stores}
    sales = dict(session.execute(
        select(Transaction.store_id, func.sum(Transaction.amount))
        .where(Transaction.store_id.in_(ids), Transaction.occurred_at >= end - timedelta(days=PRE_DAYS),
               Transaction.occurred_at < end).group_by(Transaction.store_id)).all()) if ids else {}
    if not sales:
        return {s.code: float(s.size_sqm or 0.0) for s in stores}
    return {s.code: float(sales.get(s.id) or 0.0) for s in stores}


def block_arms(weights: Mapping[str, float]) -> list[str]:
    """The arms of one block: each arm as often as its weight asks, in the fewest stores (≤ 20)."""
    arms = {k: w for k, w in weights.items() if w > 0}
    fractions = {k: Fraction(w).limit_denominator(20) for k, w in arms.items()}
    size = math.lcm(*(f.denominator for f in fractions.values()))
    if sum(fractions.values()) != 1 or size > 20:
        return sorted(arms)  # weights that do not divide neatly: one of each per block
    return [k for k in sorted(arms) for _ in range(int(fractions[k] * size))]


def matched_arms(stores: list[tuple[str, str, float]], weights: Mapping[str, float], salt: str) -> dict[str, str]:
    """Arm per store code, from (code, region, pre-period value) triples; deterministic given the salt."""
    template = block_arms(weights)
    by_region: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for code, region, value in stores:
        by_region[region].append((code, value))
    arms: dict[str, str] = {}
    for region in sorted(by_region):
        ranked = sorted(by_region[region], key=lambda s: (s[1], s[0]))
        full = len(ranked) - len(ranked) % len(template)
        for start in range(0, full, len(template)):
            order = list(template)
            random.Random(f"{salt}:{region}:{start}").shuffle(order)
            for (code, _), arm in zip(ranked[start:start + len(template)], order):
                arms[code] = arm
        for code, _ in ranked[full:]:  # the remainder of a region: plain weighted bucketing
            arms[code] = variant_for(salt, f"store:{code}", weights) or template[0]
    return arms


def balance(values: Mapping[str, float], arms: Mapping[str, str], control: str) -> list[dict[str, float | str | int]]:
    """Per arm: stores, mean and sd of the pre-period value, standardised mean difference to control."""
    by_arm: dict[str, list[float]] = defaultdict(list)
    for code, arm in arms.items():
        by_arm[arm].append(values[code])
    stats = {arm: (len(v), sum(v) / len(v), _sd(v)) for arm, v in by_arm.items()}
    rows = []
    for arm in sorted(stats, key=lambda a: (a != control, a)):
        n, mean, sd = stats[arm]
        c = stats.get(control)
        pooled = math.sqrt((sd**2 + c[2] ** 2) / 2) if c else float("nan")
        smd = (mean - c[1]) / pooled if c and pooled > 0 else (0.0 if arm == control else float("nan"))
        rows.append({"arm": arm, "stores": n, "pre_mean": mean, "pre_sd": sd, "smd": smd})
    return rows


def _sd(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
