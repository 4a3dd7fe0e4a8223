"""Programme economics per treated customer: incremental revenue and margin, cost, net profit, ROI."""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class EconomicsResult:
    incremental_revenue_per_customer: float
    incremental_margin_per_customer: float
    cost_per_customer: float
    net_profit_per_customer: float
    roi: float
    break_even_discount_rate: float
    net_profit_low: float
    net_profit_high: float
    projected_customers: int | None
    projected_net_profit: float | None
    projected_incremental_revenue: float | None


def economics(spend_effect: float, spend_ci: tuple[float, float], treatment_spend_per_customer: float,
              cost_per_customer: float, margin_rate: float, projected_customers: int | None = None) -> EconomicsResult:
    """Margin on the uplift minus what the programme costs, per treated customer, and at a wider scope.

    The break-even discount rate is the rate at which a discount's cost (rate × spend) equals the
    incremental margin, holding the uplift fixed: a ceiling for re-pricing, not a forecast.
    """
    margin = spend_effect * margin_rate
    net = margin - cost_per_customer
    roi = net / cost_per_customer if cost_per_customer > 0 else math.nan
    breakeven = margin / treatment_spend_per_customer if treatment_spend_per_customer > 0 else math.nan
    low, high = (ci * margin_rate - cost_per_customer for ci in spend_ci)
    proj_net = net * projected_customers if projected_customers is not None else None
    proj_rev = spend_effect * projected_customers if projected_customers is not None else None
    return EconomicsResult(spend_effect, margin, cost_per_customer, net, roi, max(breakeven, 0.0) if
                           math.isfinite(breakeven) else math.nan, low, high, projected_customers, proj_net, proj_rev)
