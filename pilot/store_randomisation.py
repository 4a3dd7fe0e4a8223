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
from pilot.models import Enrolment, Pilot, Stage, Store, Transaction

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


def matched_blocks(stores: list[tuple[str, str, float]],
                   weights: Mapping[str, float]) -> tuple[list[list[str]], list[str]]:
    """The matched scheme's blocks (store codes, each block the size of the arms' template) and the
    stores left over (each region's remainder, bucketed one by one), from (code, region, pre-period
    value) triples: within each region, stores sorted by the value and cut into consecutive blocks."""
    size = len(block_arms(weights))
    by_region: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for code, region, value in stores:
        by_region[region].append((code, value))
    blocks, rest = [], []
    for region in sorted(by_region):
        ranked = [code for code, _ in sorted(by_region[region], key=lambda s: (s[1], s[0]))]
        full = len(ranked) - len(ranked) % size
        blocks += [ranked[start:start + size] for start in range(0, full, size)]
        rest += ranked[full:]
    return blocks, rest


def matched_arms(stores: list[tuple[str, str, float]], weights: Mapping[str, float], salt: str) -> dict[str, str]:
    """Arm per store code, from (code, region, pre-period value) triples; deterministic given the salt."""
    template = block_arms(weights)
    region_of = {code: region for code, region, _ in stores}
    blocks, rest = matched_blocks(stores, weights)
    arms: dict[str, str] = {}
    starts: dict[str, int] = defaultdict(int)
    for block in blocks:
        region = region_of[block[0]]
        order = list(template)
        random.Random(f"{salt}:{region}:{starts[region]}").shuffle(order)
        starts[region] += len(template)
        arms.update(zip(block, order))
    for code in rest:  # the remainder of a region: plain weighted bucketing
        arms[code] = variant_for(salt, f"store:{code}", weights) or template[0]
    return arms


def scheme(session: Session, pilot: Pilot, stage: Stage) -> dict[int, int]:
    """The matched scheme a store pilot's stage was randomised by, for the randomisation test: block
    number per enrolled store id (−1 for a store bucketed on its own), rebuilt as `enrol` built it —
    the stage's enrolled stores, their pre-period values before the pilot's start, the stage's weights.
    A block whose arms are not the template (the pre-period data changed since) is kept as a block
    with its observed arms (the test then permutes within it)."""
    rows = session.execute(select(Enrolment.store_id, Enrolment.arm).where(
        Enrolment.pilot_id == pilot.id, Enrolment.stage_id == stage.id, Enrolment.arm.is_not(None))).all()
    stores = {s.id: s for s in session.scalars(select(Store).where(Store.id.in_([r[0] for r in rows])))}
    if not stores:
        return {}
    values = pre_period_values(session, list(stores.values()), pilot.started_at)
    ids = {s.code: s.id for s in stores.values()}
    blocks, rest = matched_blocks([(s.code, s.region.code, values[s.code]) for s in stores.values()],
                                  stage.allocation)
    out = {ids[code]: number for number, block in enumerate(blocks) for code in block}
    out.update({ids[code]: -1 for code in rest})
    return out


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
