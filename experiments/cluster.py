"""Units clustered in stores: cluster-robust errors, and store-level difference-in-differences and ANCOVA."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from experiments.means import welch
from experiments.results import EffectResult, InferenceConfig, build, degenerate, from_estimate, relative, relative_to
from experiments.statistics import ClusterSumStatistic, RegressionAdjustedStatistic, SampleMeanStatistic

Clusters = Mapping[object, tuple[ClusterSumStatistic, ClusterSumStatistic]]
PeriodClusters = Mapping[tuple[object, object], tuple[ClusterSumStatistic, ClusterSumStatistic]]


def cluster_robust(clusters: Clusters, config: InferenceConfig = InferenceConfig()) -> EffectResult:
    """Difference in means with standard errors clustered by store (statsmodels' `cov_type="cluster"`).

    `clusters` maps each store to its (control, treatment) n and Σy; a store may hold one arm or both.
    The small-sample factor is G/(G−1)·(N−1)/(N−2) and inference uses t with G−1 degrees of freedom.
    """
    return cluster_robust_by_period({(store, 0): pair for store, pair in clusters.items()}, config)


def cluster_robust_by_period(cells: PeriodClusters, config: InferenceConfig = InferenceConfig()) -> EffectResult:
    """`cluster_robust` when the arms' weights changed while the stage ran: `cells` maps (store,
    allocation period) to the (control, treatment) n and Σy. The effect is post-stratified (each
    period's difference weighted by its share of the units), which is the treatment coefficient of
    the regression fully interacted with centred period indicators (Lin 2013); its error is that
    regression's clustered by store, so a store's units in different periods are not taken as
    independent. Factor G/(G−1)·(N−1)/(N−K), K = 2 × periods; t with G−1 degrees of freedom.
    Periods in which an arm has no units are left out. One period is plain `cluster_robust`.
    """
    arms: dict[object, list[list[float]]] = {}  # period -> [[n_c, Σ_c], [n_t, Σ_t]]
    for (_, period), (c, t) in cells.items():
        tot = arms.setdefault(period, [[0, 0.0], [0, 0.0]])
        for side, stat in zip(tot, (c, t)):
            side[0] += stat.n
            side[1] += stat.sum
    n = tuple(sum(tot[i][0] for tot in arms.values()) for i in (0, 1))
    usable = {p: tot for p, tot in arms.items() if tot[0][0] > 0 and tot[1][0] > 0}
    method = "cluster_robust" if len(arms) <= 1 else "cluster_robust+post_stratified"
    units = sum(tot[0][0] + tot[1][0] for tot in usable.values())
    weights = {p: (tot[0][0] + tot[1][0]) / units for p, tot in usable.items()} if units else {}
    period_means = {p: (tot[0][1] / tot[0][0], tot[1][1] / tot[1][0]) for p, tot in usable.items()}
    stores = {store for (store, period) in cells if period in usable or not usable}
    groups = len(stores)
    if not usable or groups < 2 or units <= 2 * len(usable):
        pooled = tuple(sum(tot[i][1] for tot in arms.values()) / n[i] if n[i] else float("nan") for i in (0, 1))
        return degenerate(method, n, pooled, "too_few_clusters" if groups < 2 else "too_few_units")
    means = tuple(sum(weights[p] * period_means[p][i] for p in usable) for i in (0, 1))
    # per store: the score of each arm's standardised mean, Σ_p w_p (Σy − n·mean_p) / n_p of the arm
    scores: dict[object, np.ndarray] = {}
    for (store, period), (c, t) in cells.items():
        if period not in usable:
            continue
        row = scores.setdefault(store, np.zeros(2))
        for i, stat in enumerate((c, t)):
            row[i] += weights[period] * (stat.sum - stat.n * period_means[period][i]) / usable[period][i][0]
    matrix = np.array(list(scores.values()))
    factor = groups / (groups - 1) * (units - 1) / (units - 2 * len(usable))
    meat = factor * matrix.T @ matrix
    return build(method, n, means, (meat[0, 0], meat[1, 1]), groups - 1, config, cov_means=meat[0, 1])


def difference_in_differences(control: RegressionAdjustedStatistic, treatment: RegressionAdjustedStatistic,
                              config: InferenceConfig = InferenceConfig()) -> EffectResult:
    """Welch test on each store's post − pre value (y = post, x = pre, one unit per store)."""
    def change(s: RegressionAdjustedStatistic) -> SampleMeanStatistic:
        return SampleMeanStatistic(s.n, s.y_sum - s.x_sum,
                                   s.y_sum_squares + s.x_sum_squares - 2 * s.xy_sum_of_products)

    result = welch(change(control), change(treatment), config)
    if not result.ok:
        return result
    # relative to the control stores' post-period mean b, by the delta method: Var(b) = var(post)/n and
    # Cov(effect, b) = −Cov(mean change, mean post) = −(var(post) − cov(post, pre))/n of the control stores
    base, effect = control.post.mean, result.effect_abs
    var_base = control.post.variance / control.n
    cov_base = -(control.post.variance - control.covariance) / control.n
    rel, se_rel = relative_to(effect, result.se, base, var_base, cov_base)
    out = from_estimate("difference_in_differences", (control.n, treatment.n), (control.post.mean, treatment.post.mean),
                        effect, result.se, result.df, rel, se_rel, config)
    return replace(out, var_mean_control=var_base, cov_effect_control=cov_base)


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
