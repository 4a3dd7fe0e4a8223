"""Units clustered in stores: cluster-robust errors, and store-level difference-in-differences and ANCOVA."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from experiments.means import welch
from experiments.results import EffectResult, InferenceConfig, build, degenerate, from_estimate, relative
from experiments.statistics import ClusterSumStatistic, RegressionAdjustedStatistic, SampleMeanStatistic

Clusters = Mapping[object, tuple[ClusterSumStatistic, ClusterSumStatistic]]


def cluster_robust(clusters: Clusters, config: InferenceConfig = InferenceConfig()) -> EffectResult:
    """Difference in means with standard errors clustered by store (statsmodels' `cov_type="cluster"`).

    `clusters` maps each store to its (control, treatment) n and Σy; a store may hold one arm or both.
    The small-sample factor is G/(G−1)·(N−1)/(N−2) and inference uses t with G−1 degrees of freedom.
    """
    parts = list(clusters.values())
    n = (sum(c.n for c, _ in parts), sum(t.n for _, t in parts))
    sums = (sum(c.sum for c, _ in parts), sum(t.sum for _, t in parts))
    means = (sums[0] / n[0] if n[0] else float("nan"), sums[1] / n[1] if n[1] else float("nan"))
    groups = len(parts)
    if min(n) < 1 or groups < 2:
        return degenerate("cluster_robust", n, means, "too_few_clusters" if groups < 2 else "too_few_units")
    # per-cluster residual sums of each arm, scaled by that arm's size: the OLS score of the arm's mean
    scores = np.array([[(c.sum - c.n * means[0]) / n[0], (t.sum - t.n * means[1]) / n[1]] for c, t in parts])
    total = n[0] + n[1]
    factor = groups / (groups - 1) * (total - 1) / (total - 2)
    meat = factor * scores.T @ scores
    return build("cluster_robust", n, means, (meat[0, 0], meat[1, 1]), groups - 1, config, cov_means=meat[0, 1])


def difference_in_differences(control: RegressionAdjustedStatistic, treatment: RegressionAdjustedStatistic,
                              config: InferenceConfig = InferenceConfig()) -> EffectResult:
    """Welch test on each store's post − pre value (y = post, x = pre, one unit per store)."""
    def change(s: RegressionAdjustedStatistic) -> SampleMeanStatistic:
        return SampleMeanStatistic(s.n, s.y_sum - s.x_sum,
                                   s.y_sum_squares + s.x_sum_squares - 2 * s.xy_sum_of_products)

    result = welch(change(control), change(treatment), config)
    rel_base = control.post.mean
    rel, se_rel = (result.effect_abs / rel_base, result.se / abs(rel_base)) if rel_base else (float("nan"),) * 2
    return from_estimate("difference_in_differences", (control.n, treatment.n),
                         (control.post.mean, treatment.post.mean), result.effect_abs, result.se, result.df,
                         rel, se_rel, config) if result.ok else result


def ancova(control: RegressionAdjustedStatistic, treatment: RegressionAdjustedStatistic,
           config: InferenceConfig = InferenceConfig()) -> EffectResult:
    """OLS post ~ 1 + treated + pre on store-level values, classical errors (df = N − 3)."""
    n = (control.n, treatment.n)
    total = control + treatment
    means = (control.post.mean, treatment.post.mean)
    if total.n < 4 or min(n) < 1:
        return degenerate("ancova", n, means, "too_few_units")
    xtx = np.array([[total.n, treatment.n, total.x_sum],
                    [treatment.n, treatment.n, treatment.x_sum],
                    [total.x_sum, treatment.x_sum, total.x_sum_squares]], dtype=float)
    xty = np.array([total.y_sum, treatment.y_sum, total.xy_sum_of_products], dtype=float)
    try:
        inv = np.linalg.inv(xtx)
    except np.linalg.LinAlgError:
        return degenerate("ancova", n, means, "collinear")
    beta = inv @ xty
    df = total.n - 3
    sigma2 = (total.y_sum_squares - beta @ xty) / df
    cov = sigma2 * inv
    # relative effect against the control's fitted value at the pooled pre-period mean
    x_bar = total.x_sum / total.n
    base = beta[0] + beta[2] * x_bar
    grad_base = np.array([1.0, 0.0, x_bar])
    var_base = grad_base @ cov @ grad_base
    cov_base_effect = grad_base @ cov[:, 1]
    rel, se_rel = relative(base, var_base, base + beta[1], var_base + cov[1, 1] + 2 * cov_base_effect,
                           var_base + cov_base_effect)
    return from_estimate("ancova", n, means, float(beta[1]), float(np.sqrt(cov[1, 1])), df, rel, se_rel, config)
