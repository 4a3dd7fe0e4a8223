"""Always-valid inference: the Gaussian-mixture confidence sequence (Waudby-Smith et al.), as GrowthBook uses it.

A look at any time, as often as one likes, keeps the error rate at α: the interval is wider than
the fixed-horizon one and tightest around `tuning` total units.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import optimize

DEFAULT_TUNING = 5000


@dataclass(frozen=True)
class SequentialResult:
    ci_low: float
    ci_high: float
    p_value: float


def mixture_rho(alpha: float, tuning: float = DEFAULT_TUNING) -> float:
    """The mixture's spread, chosen so the sequence is tightest near `tuning` units (eq. 161)."""
    return math.sqrt((-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / tuning)


def half_width(se: float, n_total: int, alpha: float, tuning: float = DEFAULT_TUNING) -> float:
    """Half-width of the two-sided level-α confidence sequence at n_total units (eq. 9)."""
    rho = mixture_rho(alpha, tuning)
    s2 = se**2 * n_total  # the per-unit variance of the estimate
    a = n_total * s2 * rho**2 + 1
    return math.sqrt(2 * a * math.log(math.sqrt(a) / alpha)) / (n_total * rho)


def always_valid_p(effect: float, se: float, n_total: int, tuning: float = DEFAULT_TUNING) -> float:
    """The smallest α whose confidence sequence excludes zero."""
    if not (math.isfinite(effect) and math.isfinite(se) and se > 0 and n_total > 0):
        return float("nan")
    # solved on log(α): p-values span hundreds of orders of magnitude
    gap = lambda u: half_width(se, n_total, math.exp(u), tuning) - abs(effect)  # noqa: E731
    hi, lo = math.log1p(-1e-12), math.log(1e-300)
    if gap(hi) >= 0:
        return 1.0
    if gap(lo) < 0:
        return 0.0
    return math.exp(optimize.brentq(gap, lo, hi, xtol=1e-12, maxiter=500))


def sequential(effect: float, se: float, n_total: int, alpha: float = 0.05,
               tuning: float = DEFAULT_TUNING) -> SequentialResult:
    """Always-valid interval and p-value of an estimate with standard error `se` from n_total units."""
    if not (math.isfinite(se) and se > 0 and n_total > 0):
        return SequentialResult(float("nan"), float("nan"), float("nan"))
    h = half_width(se, n_total, alpha, tuning)
    return SequentialResult(effect - h, effect + h, always_valid_p(effect, se, n_total, tuning))
