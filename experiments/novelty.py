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
