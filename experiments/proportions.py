"""Two-proportion z-test: p-value from the pooled z, interval from the unpooled (Wald) error."""
from __future__ import annotations

import math
from dataclasses import replace

from experiments.results import EffectResult, InferenceConfig, build, degenerate, p_value
from experiments.statistics import SampleMeanStatistic


def two_proportion_z(control: SampleMeanStatistic, treatment: SampleMeanStatistic,
                     config: InferenceConfig = InferenceConfig()) -> EffectResult:
    """Compare two proportions (statistics of 0/1 values)."""
    n, means = (control.n, treatment.n), (control.mean, treatment.mean)
    if min(n) < 1:
        return degenerate("two_proportion_z", n, means, "too_few_units")
    var_means = tuple(p * (1 - p) / k for p, k in zip(means, n))
    result = build("two_proportion_z", n, means, var_means, None, config)
    pooled = (control.sum + treatment.sum) / (control.n + treatment.n)
    se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / control.n + 1 / treatment.n))
    if se_pooled == 0:
        return degenerate("two_proportion_z", n, means, "zero_variance")
    z = (means[1] - means[0]) / se_pooled
    return replace(result, statistic=z, p_value=p_value(z, None, config.alternative))
