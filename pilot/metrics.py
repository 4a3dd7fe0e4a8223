"""The metric catalogue: what a pilot can measure, how, and which direction is good."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class MetricDefinition:
    key: str
    kind: str  # mean | proportion | ratio
    good_direction: str  # up | down
    description: str


CATALOGUE = {m.key: m for m in [
    MetricDefinition("spend_per_customer", "mean", "up", "Net spend per assigned customer in the window"),
    MetricDefinition("visits_per_customer", "mean", "up", "Purchases (baskets) per assigned customer"),
    MetricDefinition("spend_per_visit", "ratio", "up", "Σ spend ÷ Σ visits of the arm (average basket)"),
    MetricDefinition("conversion", "proportion", "up", "Share of assigned customers who bought at least once"),
    MetricDefinition("retention", "proportion", "up",
                     "Share of customers who bought in the first half of the window and again in the second"),
    MetricDefinition("items_per_basket", "ratio", "up", "Σ items ÷ Σ visits of the arm"),
    MetricDefinition("discount_cost_per_customer", "mean", "down", "Programme cost per assigned customer"),
]}


def catalogue() -> list[dict[str, str]]:
    """The catalogue as plain data."""
    return [asdict(m) for m in CATALOGUE.values()]
