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


@dataclass(frozen=True)
class GroupEconomicsResult:
    """Does a participant out-earn an ordinary customer of the same group (its control)?"""

    group: str
    n_control: int
    n_treatment: int
    participant_value: float  # margin on a participant's spend minus what the programme costs for them
    ordinary_value: float  # the same for the group's control customers (their cost: business as usual)
    incremental_margin_per_participant: float  # margin on the spend uplift
    cost_per_participant: float  # programme cost, participant minus ordinary customer
    net_per_participant: float  # incremental margin − cost: what a participant is worth more
    net_low: float
    net_high: float
    out_earns: bool | None  # True: the whole interval is above 0; False: below; None: not yet clear


def group_economics(group: str, n: tuple[int, int], spend: tuple[float, float], spend_effect: float,
                    spend_ci: tuple[float, float], cost: tuple[float, float],
                    margin_rate: float) -> GroupEconomicsResult:
    """One customer group's economics: `spend` and `cost` are per customer (control, treatment), the
    effect and its interval come from the group's comparison (CUPED where it applied)."""
    gap = cost[1] - cost[0]
    net = spend_effect * margin_rate - gap
    low, high = (ci * margin_rate - gap for ci in spend_ci)
    verdict = True if low > 0 else False if high < 0 else None
    return GroupEconomicsResult(group, n[0], n[1], spend[1] * margin_rate - cost[1], spend[0] * margin_rate - cost[0],
                                spend_effect * margin_rate, gap, net, low, high,
                                verdict if math.isfinite(low) and math.isfinite(high) else None)
