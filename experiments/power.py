"""Planning: power, minimum detectable effect, sample size and duration; design effect for store pilots.

Means follow statsmodels' TTestIndPower (noncentral t), proportions its NormalIndPower on
Cohen's h, so the numbers agree with statsmodels where both apply.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import optimize, stats


def design_effect(units_per_cluster: float, icc: float) -> float:
    """Variance inflation of randomising whole stores: 1 + (m − 1)·ICC."""
    return 1 + (units_per_cluster - 1) * icc


def power_t(d: float, n1: float, ratio: float = 1.0, alpha: float = 0.05, two_sided: bool = True) -> float:
    """Power of the two-sample t-test for standardised effect d, n1 control units and n1·ratio treated."""
    n2 = n1 * ratio
    df = n1 + n2 - 2
    nc = d * math.sqrt(n1 * n2 / (n1 + n2))
    crit = stats.t.ppf(1 - (alpha / 2 if two_sided else alpha), df)
    power = stats.nct.sf(crit, df, nc)
    if two_sided:
        power += stats.nct.cdf(-crit, df, nc)
    return float(power)


def power_normal(h: float, n1: float, ratio: float = 1.0, alpha: float = 0.05, two_sided: bool = True) -> float:
    """Power of the two-sample z-test for standardised effect h."""
    nc = h * math.sqrt(n1 * ratio / (1 + ratio))
    crit = stats.norm.ppf(1 - (alpha / 2 if two_sided else alpha))
    power = stats.norm.sf(crit - nc)
    if two_sided:
        power += stats.norm.cdf(-crit - nc)
    return float(power)


def cohens_h(p_control: float, p_treatment: float) -> float:
    """The arcsine effect size of two proportions."""
    return 2 * math.asin(math.sqrt(p_treatment)) - 2 * math.asin(math.sqrt(p_control))


@dataclass(frozen=True)
class PlanResult:
    """Units per arm (control, treatment), total, and days at the given daily inflow."""

    n_control: int
    n_treatment: int
    n_total: int
    days: float | None
    design_effect: float


def _solve_n(power_fn, target: float) -> float:
    if power_fn(2.0) >= target:
        return 2.0
    hi = 4.0
    while power_fn(hi) < target:
        hi *= 2
        if hi > 1e12:
            return math.inf
    return float(optimize.brentq(lambda n: power_fn(n) - target, 2.0, hi, xtol=1e-6))


def sample_size_means(effect: float, sd: float, power: float = 0.8, alpha: float = 0.05, ratio: float = 1.0,
                      daily_units: float | None = None, deff: float = 1.0) -> PlanResult:
    """Units needed to detect an absolute effect on a mean with standard deviation sd."""
    n1 = _solve_n(lambda n: power_t(abs(effect) / sd, n, ratio, alpha), power)
    return _plan(n1, ratio, daily_units, deff)


def sample_size_proportions(p_control: float, p_treatment: float, power: float = 0.8, alpha: float = 0.05,
                            ratio: float = 1.0, daily_units: float | None = None, deff: float = 1.0) -> PlanResult:
    """Units needed to tell p_treatment from p_control."""
    h = abs(cohens_h(p_control, p_treatment))
    n1 = _solve_n(lambda n: power_normal(h, n, ratio, alpha), power)
    return _plan(n1, ratio, daily_units, deff)


def _solve_effect(power_fn, target: float) -> float:
    hi = 0.01
    while power_fn(hi) < target:
        hi *= 2
        if hi > 20:
            return math.inf
    return float(optimize.brentq(lambda x: power_fn(x) - target, 1e-9, hi, xtol=1e-12))


def _plan(n1: float, ratio: float, daily_units: float | None, deff: float) -> PlanResult:
    n_c = math.ceil(n1 * deff)
    n_t = math.ceil(n1 * ratio * deff)
    days = (n_c + n_t) / daily_units if daily_units else None
    return PlanResult(n_c, n_t, n_c + n_t, days, deff)


def mde_means(sd: float, n_control: float, n_treatment: float, power: float = 0.8, alpha: float = 0.05,
              deff: float = 1.0) -> float:
    """The smallest absolute effect on a mean detectable with this power (after the design effect)."""
    n1, ratio = n_control / deff, n_treatment / n_control
    if n1 < 2:
        return math.inf
    return _solve_effect(lambda x: power_t(x, n1, ratio, alpha), power) * sd


def mde_proportion(p_control: float, n_control: float, n_treatment: float, power: float = 0.8,
                   alpha: float = 0.05, deff: float = 1.0) -> float:
    """The smallest absolute lift over p_control detectable with this power."""
    n1, ratio = n_control / deff, n_treatment / n_control
    h = _solve_effect(lambda x: power_normal(x, n1, ratio, alpha), power)
    top = min(math.pi, 2 * math.asin(math.sqrt(p_control)) + h)
    return float(math.sin(top / 2) ** 2 - p_control)
