"""Always-valid inference: the Gaussian-mixture confidence sequence (Waudby-Smith et al.), as GrowthBook uses it.

A look at any time, as often as one likes, keeps the error rate at α: the interval is wider than
the fixed-horizon one and tightest around `tuning` total units, whatever the metric's scale (the
mixture is set on the standardised scale and the half-width carries the per-unit standard
deviation, eq. 9; an interval of spend in cents is the interval in euros × 100, with the same p).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

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
    """Half-width of the two-sided level-α confidence sequence at n_total units (eq. 9):
    √s² · √(2(nρ² + 1) ln(√(nρ² + 1) / α)) / (nρ), with s² = se² · n the per-unit variance."""
    rho = mixture_rho(alpha, tuning)
    a = n_total * rho**2 + 1
    return se * math.sqrt(n_total) * math.sqrt(2 * a * math.log(math.sqrt(a) / alpha)) / (n_total * rho)


def always_valid_p(effect: float, se: float, n_total: int, tuning: float = DEFAULT_TUNING, *,
                   alpha: float = 0.05) -> float:
    """The always-valid p-value, 1 / e-value of the same mixture (eq. 155, ρ from `alpha`):
    min(1, √(nρ² + 1) · exp(−ρ² t² / (2(nρ² + 1)))) with t² = effect² · n / se². It is below α
    exactly when the level-α sequence excludes zero."""
    if not (math.isfinite(effect) and math.isfinite(se) and se > 0 and n_total > 0):
        return float("nan")
    rho = mixture_rho(alpha, tuning)
    a = n_total * rho**2 + 1
    log_e = rho**2 * (effect / se) ** 2 * n_total / (2 * a) - 0.5 * math.log(a)  # log of the e-value
    return 1.0 if log_e <= 0 else math.exp(-log_e)


def sequential(effect: float, se: float, n_total: int, alpha: float = 0.05,
               tuning: float = DEFAULT_TUNING) -> SequentialResult:
    """Always-valid interval and p-value of an estimate with standard error `se` from n_total units."""
    if not (math.isfinite(se) and se > 0 and n_total > 0):
        return SequentialResult(float("nan"), float("nan"), float("nan"))
    h = half_width(se, n_total, alpha, tuning)
    return SequentialResult(effect - h, effect + h, always_valid_p(effect, se, n_total, tuning, alpha=alpha))
