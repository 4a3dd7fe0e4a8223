"""Effect by week since exposure, and a test for a trend across weeks (a novelty effect that fades)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class TrendResult:
    """Weighted least-squares slope of the weekly effects (known variances: scale fixed at 1)."""

    slope: float
    se: float
    p_value: float
    intercept: float
    fading: bool
    message: str | None = None


def effect_trend(weeks: Sequence[float], effects: Sequence[float], ses: Sequence[float],
                 alpha: float = 0.05) -> TrendResult:
    """Slope of effect on week, weights 1/se²; `fading` when the slope is significantly against the effect."""
    rows = [(w, e, s) for w, e, s in zip(weeks, effects, ses) if math.isfinite(e) and math.isfinite(s) and s > 0]
    if len(rows) < 3:
        return TrendResult(float("nan"), float("nan"), float("nan"), float("nan"), False, "too_few_weeks")
    week, effect, se = (np.array(c, dtype=float) for c in zip(*rows))
    x = np.column_stack([np.ones_like(week), week])
    w = 1 / se**2
    cov = np.linalg.inv(x.T @ (x * w[:, None]))
    beta = cov @ (x.T @ (w * effect))
    slope_se = math.sqrt(cov[1, 1])
    p = float(2 * stats.norm.sf(abs(beta[1] / slope_se)))
    mean_effect = float(np.average(effect, weights=w))
    fading = p < alpha and beta[1] * mean_effect < 0
    return TrendResult(float(beta[1]), slope_se, p, float(beta[0]), bool(fading))


@dataclass(frozen=True)
class FadeResult:
    """The fading test: the first week's effect minus the mean effect of the later weeks, from each
    unit's own contrast (its first week minus the mean of its later full weeks), so the covariance of
    a unit's weeks is in the error. One-sided, against the direction of the effect."""

    early_minus_late: float
    se: float
    df: float | None
    statistic: float
    p_value: float  # one-sided: P(a contrast this much against the effect's direction | a constant effect)
    fading: bool
    message: str | None = None


def fading_contrast(contrast_effect: float, contrast_se: float, df: float | None, direction: float = 1.0,
                    alpha: float = 0.05) -> FadeResult:
    """`fading` when the early-minus-late contrast (treatment − control of the per-unit contrast)
    points `direction`'s way — the effect was larger at first in the good direction (+1: up is good)
    — significantly at one-sided α.

    Under a constant effect the contrast is 0 whatever the effect (a constant lifts the first week and
    the later ones alike), and the direction is fixed before looking (the metric's good direction),
    so the false alarm is α."""
    if not (math.isfinite(contrast_effect) and math.isfinite(contrast_se) and contrast_se > 0):
        return FadeResult(float("nan"), float("nan"), df, float("nan"), float("nan"), False, "too_few_weeks")
    statistic = (1.0 if direction >= 0 else -1.0) * contrast_effect / contrast_se
    p = float(stats.norm.sf(statistic) if df is None else stats.t.sf(statistic, df))
    return FadeResult(contrast_effect, contrast_se, df, statistic, p, bool(p < alpha))
