"""Does the effect differ between customer groups? Cochran's Q across the groups' estimates."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats


@dataclass(frozen=True)
class HeterogeneityResult:
    q: float
    df: int
    p_value: float
    i_squared: float
    pooled_effect: float
    message: str | None = None


def cochran_q(effects: Sequence[float], ses: Sequence[float]) -> HeterogeneityResult:
    """Q = Σ w(e − ē)², w = 1/se², against χ²(k − 1); groups without a finite error are left out."""
    pairs = [(e, s) for e, s in zip(effects, ses) if math.isfinite(e) and math.isfinite(s) and s > 0]
    if len(pairs) < 2:
        return HeterogeneityResult(float("nan"), 0, float("nan"), float("nan"), float("nan"), "too_few_groups")
    weights = [1 / s**2 for _, s in pairs]
    pooled = sum(w * e for w, (e, _) in zip(weights, pairs)) / sum(weights)
    q = sum(w * (e - pooled) ** 2 for w, (e, _) in zip(weights, pairs))
    df = len(pairs) - 1
    i2 = max(0.0, (q - df) / q) if q > 0 else 0.0
    return HeterogeneityResult(q, df, float(stats.chi2.sf(q, df)), i2, pooled)
