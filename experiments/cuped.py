"""CUPED: outcome adjusted by a pre-period covariate, θ from the pooled two-arm sample."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from experiments.means import welch_df
from experiments.results import EffectResult, InferenceConfig, build, degenerate
from experiments.statistics import RegressionAdjustedStatistic


@dataclass(frozen=True)
class CupedResult:
    """The adjusted comparison, θ, and how much variance the covariate removed."""

    effect: EffectResult
    theta: float
    variance_reduction: float


def adjusted_variance(stat: RegressionAdjustedStatistic, theta: float) -> float:
    """Variance of y − θ·x within one arm."""
    return stat.post.variance + theta**2 * stat.pre.variance - 2 * theta * stat.covariance


def cuped(control: RegressionAdjustedStatistic, treatment: RegressionAdjustedStatistic,
          config: InferenceConfig = InferenceConfig()) -> CupedResult:
    """Welch test on y − θ(x − x̄), θ = cov(y, x) / var(x) over control and treatment pooled."""
    n = (control.n, treatment.n)
    pooled = control + treatment
    if min(n) < 2 or not pooled.pre.variance > 0:
        means = (control.post.mean, treatment.post.mean)
        return CupedResult(degenerate("cuped", n, means, "too_few_units" if min(n) < 2 else "constant_covariate"),
                           float("nan"), float("nan"))
    theta = pooled.covariance / pooled.pre.variance
    x_bar = pooled.pre.mean
    means = tuple(s.post.mean - theta * (s.pre.mean - x_bar) for s in (control, treatment))
    variances = tuple(adjusted_variance(s, theta) for s in (control, treatment))
    var_means = (variances[0] / n[0], variances[1] / n[1])
    result = build("cuped", n, means, var_means, welch_df(*var_means, *n), config)
    plain = control.post.variance / n[0] + treatment.post.variance / n[1]
    reduction = 1 - (var_means[0] + var_means[1]) / plain if plain > 0 else float("nan")
    if not math.isfinite(result.se):
        result = replace(result, message=result.message or "zero_variance")
    return CupedResult(result, theta, reduction)
