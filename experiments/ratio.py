"""Ratio metrics (Σ numerator ÷ Σ denominator per arm, e.g. spend per visit) by the delta method."""
from __future__ import annotations

from experiments.results import EffectResult, InferenceConfig, build, degenerate
from experiments.statistics import RatioStatistic


def ratio_variance(stat: RatioStatistic) -> float:
    """Delta-method variance of Σm/Σd from per-unit sums, squares and cross-products."""
    mu_m, mu_d = stat.numerator.mean, stat.denominator.mean
    var_m, var_d, cov = stat.numerator.variance, stat.denominator.variance, stat.covariance
    return (var_m / mu_d**2 - 2 * mu_m * cov / mu_d**3 + mu_m**2 * var_d / mu_d**4) / stat.n


def ratio_delta(control: RatioStatistic, treatment: RatioStatistic,
                config: InferenceConfig = InferenceConfig()) -> EffectResult:
    """z-test of the difference of two ratios."""
    n, means = (control.n, treatment.n), (control.ratio, treatment.ratio)
    if min(n) < 2:
        return degenerate("ratio_delta", n, means, "too_few_units")
    if control.d_sum == 0 or treatment.d_sum == 0:
        return degenerate("ratio_delta", n, means, "zero_denominator")
    return build("ratio_delta", n, means, (ratio_variance(control), ratio_variance(treatment)), None, config)
