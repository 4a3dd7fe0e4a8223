"""A purchase history drawn with numpy for the planner's tests, demos and benchmark: fast enough for
tens of thousands of customers (pilot.simulate draws the pilot period transaction by transaction).

Per customer a weekly visit rate (gamma) and an average basket (log-normal); per store a level and a
weekly random walk of its footfall (the store-level noise a store pilot fights); each week's visits
are Poisson, each basket log-normal around the customer's average. Rows go straight into the
transactions table (one accepted batch), as pilot.ingestion would leave them.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from pilot.db import utcnow
from pilot.models import Customer, IngestionBatch, Transaction


@dataclass(frozen=True)
class Drawn:
    """What was drawn, for a test to compute its own figures from: one entry per transaction."""

    customer_id: np.ndarray
    store_id: np.ndarray
    occurred_at: np.ndarray  # seconds before `end`
    amount: np.ndarray
    end: datetime
    items: np.ndarray | None = None  # None: one item a basket
    discount_cost: np.ndarray | None = None  # None: not sent


def draw(customers: np.ndarray, homes: np.ndarray, stores: np.ndarray, weeks: int, end: datetime,
         rng: np.random.Generator, visits: float = 1.0, basket: float = 30.0, store_walk: float = 0.03,
         store_noise: float = 0.04, items: bool = False, discount: float = 0.0) -> Drawn:
    """`weeks` of purchases before `end` by `customers` (ids) at their home stores `homes` (ids among `stores`);
    `items`: baskets of 1 + Poisson(amount / 10) items (else one); `discount`: half the baskets carry a
    discount cost of that rate of their amount (drawn after the rest, so the other draws stay as they were)."""
    n, k = len(customers), len(stores)
    at = {int(s): i for i, s in enumerate(stores)}
    home = np.array([at[int(h)] for h in homes])
    rate = rng.gamma(2.0, visits / 2.0, n)
    level = np.exp(rng.normal(0, 0.15, k))
    mean_basket = basket * level[home] * np.exp(rng.normal(0, 0.3, n))
    footfall = np.exp(np.cumsum(rng.normal(0, store_walk, (k, weeks)), axis=1) + rng.normal(0, store_noise, (k, weeks)))
    counts = rng.poisson(rate[:, None] * footfall[home])  # customers × weeks
    who, week = np.nonzero(counts)
    reps = counts[who, week]
    who, week = np.repeat(who, reps), np.repeat(week, reps)
    seconds_before = (weeks - week) * 7 * 86400 - rng.uniform(0, 7 * 86400 - 1, len(who))
    amount = np.round(mean_basket[who] * np.exp(rng.normal(-0.125, 0.5, len(who))), 2)
    count = 1 + rng.poisson(amount / 10.0) if items else None
    cost = np.round(amount * discount * (rng.random(len(amount)) < 0.5), 2) if discount else None
    return Drawn(customers[who], stores[home[who]], seconds_before, amount, end, count, cost)


def insert_history(session: Session, drawn: Drawn, source: str = "synthetic-history", chunk: int = 20_000) -> int:
    """Write the drawn purchases as accepted sales of one batch; returns the rows written."""
    batch = IngestionBatch(source=source, actor="synthetic", method="cli", on_error="reject_batch",
                           status="accepted", rows=len(drawn.amount), accepted=len(drawn.amount))
    session.add(batch)
    session.flush()
    now = utcnow()
    for lo in range(0, len(drawn.amount), chunk):
        rows = [{"source": source, "event_id": f"h{i}", "customer_id": int(drawn.customer_id[i]),
                 "store_id": int(drawn.store_id[i]),
                 "occurred_at": drawn.end - timedelta(seconds=float(drawn.occurred_at[i])), "type": "sale",
                 "amount": float(drawn.amount[i]), "items": 1 if drawn.items is None else int(drawn.items[i]),
                 "discount_cost": None if drawn.discount_cost is None else float(drawn.discount_cost[i]),
                 "channel": "store", "batch_id": batch.id,
                 "batch_row": i + 1, "received_at": now}
                for i in range(lo, min(lo + chunk, len(drawn.amount)))]
        session.execute(insert(Transaction.__table__), rows)  # Core: no ORM bookkeeping per row
    session.flush()
    return len(drawn.amount)


def customers_of(session: Session, store_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(customer ids, home store ids) of the customers whose home store is one of `store_ids`."""
    rows = session.execute(select(Customer.id, Customer.home_store_id)
                           .where(Customer.home_store_id.in_(store_ids)).order_by(Customer.id)).all()
    return np.array([r[0] for r in rows], dtype=int), np.array([r[1] for r in rows], dtype=int)
