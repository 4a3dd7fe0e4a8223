"""Welch's t-test for mean metrics, with absolute and relative (delta-method) effects."""
from __future__ import annotations

from experiments.results import EffectResult, InferenceConfig, build, degenerate
from experiments.statistics import SampleMeanStatistic


def welch_df(var_mean_c: float, var_mean_t: float, n_c: int, n_t: int) -> float:
    """Welch–Satterthwaite degrees of freedom from the variances of the two means."""
    num = (var_mean_c + var_mean_t) ** 2
    den = var_mean_c**2 / (n_c - 1) + var_mean_t**2 / (n_t - 1)
    return num / den if den > 0 else float("nan")


def welch(control: SampleMeanStatistic, treatment: SampleMeanStatistic,
          config: InferenceConfig = InferenceConfig()) -> EffectResult:
    """Welch's unequal-variance t-test of treatment against control."""
    n, means = (control.n, treatment.n), (control.mean, treatment.mean)
    if min(n) < 2:
        return degenerate("welch", n, means, "too_few_units")
    var_means = (control.variance / control.n, treatment.variance / treatment.n)
    return build("welch", n, means, var_means, welch_df(*var_means, *n), config)
