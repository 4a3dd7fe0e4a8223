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


FEW_CLUSTERS = 20  # below this many clusters the result carries message "few_clusters" (numbers still given)


def cluster_robust(clusters: Clusters, config: InferenceConfig = InferenceConfig()) -> EffectResult:
    """Difference in means with standard errors clustered by store: CR2 (Bell & McCaffrey 2002) with
    Bell–McCaffrey (Satterthwaite) degrees of freedom, as clubSandwich's `vcovCR(type="CR2")` with
    `Wald_test(test="HTZ")` for one contrast (Pustejovsky & Tipton 2018; Imbens & Kolesár 2016).

    `clusters` maps each store to its (control, treatment) n and Σy; a store may hold one arm or both.
    With fewer than FEW_CLUSTERS stores the result's `message` is "few_clusters": the numbers are
    there, but rest on few independent units.
    """
    return cluster_robust_by_period({(store, 0): pair for store, pair in clusters.items()}, config)


def cluster_robust_by_period(cells: PeriodClusters, config: InferenceConfig = InferenceConfig()) -> EffectResult:
    """`cluster_robust` when the arms' weights changed while the stage ran: `cells` maps (store,
    allocation period) to the (control, treatment) n and Σy. The effect is post-stratified (each
    period's difference weighted by its share of the units), which is the treatment coefficient of
    the regression fully interacted with centred period indicators (Lin 2013); its error is that
    regression's CR2 clustered by store, so a store's units in different periods are not taken as
    independent, with Bell–McCaffrey degrees of freedom. Periods in which an arm has no units are
    left out. One period is plain `cluster_robust`.

    From sums alone: the regression spans the period × arm cell means, whose hat matrix is block
    diagonal by cell (1/N_cell on the cell's units), so a store's block I − H_gg has eigenvalue
    1 − n_g,cell/N_cell along each cell's units and 1 elsewhere; the CR2 adjustment (I − H_gg)^−½
    then scales each store × cell residual sum by (1 − n_g,cell/N_cell)^−½, and the Bell–McCaffrey
    matrix GᵀG is D − Σ_cell w w ᵀ / N_cell with w_g = k_g n_g,cell (see `_bm_df`).
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
    index = {s: g for g, s in enumerate(sorted(stores, key=repr))}
    cell_keys = [(p, i) for p in usable for i in (0, 1)]
    # per store: the CR2-adjusted score of each arm's standardised mean, Σ_p w_p a (Σy − n·mean_p) / N_p,arm
    scores = np.zeros((groups, 2))
    counts = np.zeros((groups, len(cell_keys)))
    for (store, period), (c, t) in cells.items():
        if period not in usable:
            continue
        g = index[store]
        for i, stat in enumerate((c, t)):
            if not stat.n:
                continue
            size = usable[period][i][0]
            scale = _cr2_scale(stat.n / size)
            scores[g, i] += weights[period] * scale * (stat.sum - stat.n * period_means[period][i]) / size
            counts[g, cell_keys.index((period, i))] += stat.n
    meat = scores.T @ scores
    # the contrast on the cell means: +w_p / N_p,t on the treated cell, −w_p / N_p,c on the control cell
    coef = np.array([(1 if i else -1) * weights[p] / usable[p][i][0] for p, i in cell_keys])
    sizes = np.array([usable[p][i][0] for p, i in cell_keys], dtype=float)
    df = _bm_df(counts, coef, sizes)
    result = build(method, n, means, (meat[0, 0], meat[1, 1]), df, config, cov_means=meat[0, 1])
    if result.ok and groups < FEW_CLUSTERS:
        result = replace(result, message="few_clusters")
    return result


def _cr2_scale(leverage: float) -> float:
    """(1 − h)^−½, the CR2 factor of a store's share h of a cell; 0 when the store is the whole cell
    (its residual sum is 0 then: the generalised inverse, as clubSandwich takes it)."""
    return 1 / np.sqrt(1 - leverage) if leverage < 1 - 1e-12 else 0.0


def _bm_df(counts: np.ndarray, coef: np.ndarray, sizes: np.ndarray) -> float:
    """Bell–McCaffrey degrees of freedom (tr B)² / tr B² of B = GᵀG for a contrast of cell means,
    from the units per store × cell (`counts`), the contrast's weight per unit of each cell (`coef`)
    and the cells' sizes: with k = coef·(1 − n/N)^−½ per store × cell, B = D − Σ_cell w wᵀ / N_cell,
    D = diag(Σ_cell k² n), w = k n — computed without forming B."""
    leverage = counts / sizes
    factor = np.where(leverage < 1 - 1e-12, 1 / np.sqrt(np.clip(1 - leverage, 1e-300, None)), 0.0)
    k = coef * factor
    d = (k**2 * counts).sum(axis=1)
    w = k * counts  # stores × cells
    trace = d.sum() - ((w**2).sum(axis=0) / sizes).sum()
    gram = (w.T @ w) / np.sqrt(np.outer(sizes, sizes))
    trace_sq = (d**2).sum() - 2 * ((d[:, None] * w**2).sum(axis=0) / sizes).sum() + (gram**2).sum()
    return float(trace**2 / trace_sq) if trace_sq > 0 else float("nan")


def cr2(x: np.ndarray, y: np.ndarray, clusters: np.ndarray | None = None,
        contrast: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """OLS of y on the design x with CR2 errors clustered by `clusters` (each row its own cluster when
    None: HC2) and the Bell–McCaffrey degrees of freedom of `contrast` (default: the second
    coefficient). Returns (coefficients, their CR2 covariance, df). For store-level regressions: the
    matrices are rows × rows."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    rows = len(y)
    c = np.zeros(x.shape[1]) if contrast is None else np.asarray(contrast, dtype=float)
    if contrast is None:
        c[1] = 1.0
    bread = np.linalg.inv(x.T @ x)
    beta = bread @ (x.T @ y)
    resid = y - x @ beta
    hat = x @ bread @ x.T
    residual_maker = np.eye(rows) - hat
    lc = bread @ c
    if clusters is None:  # HC2: each row its own cluster, the same formulas with 1 × 1 blocks, vectorised
        leverage = np.diag(hat)
        adjust = np.where(leverage < 1 - 1e-12, 1 / np.sqrt(np.clip(1 - leverage, 1e-300, None)), 0.0)
        scores = x * (adjust * resid)[:, None]
        cov = bread @ (scores.T @ scores) @ bread
        weights = adjust * (x @ lc)
        gram = weights[:, None] * residual_maker * weights[None, :]  # GᵀG = D (I − H) D
        total = (gram**2).sum()
        return beta, cov, float(np.trace(gram) ** 2 / total) if total > 0 else float("nan")
    labels = np.asarray(clusters)
    meat = np.zeros_like(bread)
    columns = []
    for g in np.unique(labels):
        idx = np.flatnonzero(labels == g)
        adjust = _inverse_sqrt(residual_maker[np.ix_(idx, idx)])
        score = x[idx].T @ (adjust @ resid[idx])
        meat += np.outer(score, score)
        columns.append(residual_maker[:, idx] @ (adjust @ (x[idx] @ lc)))
    cov = bread @ meat @ bread
    gram = np.array(columns) @ np.array(columns).T
    df = float(np.trace(gram) ** 2 / (gram**2).sum()) if (gram**2).sum() > 0 else float("nan")
    return beta, cov, df


def ancova_cr2(y: np.ndarray, pre: np.ndarray, treated: np.ndarray,
               config: InferenceConfig = InferenceConfig()) -> EffectResult:
    """Store-level ANCOVA post ~ 1 + treated + pre with CR2 (HC2: each store its own cluster) errors
    and Bell–McCaffrey df; the relative effect against the control's fitted value at the pooled
    pre-period mean, as `ancova`."""
    y, pre, t = (np.asarray(v, dtype=float) for v in (y, pre, treated))
    n = (int((t == 0).sum()), int((t == 1).sum()))
    means = (float(y[t == 0].mean()) if n[0] else float("nan"), float(y[t == 1].mean()) if n[1] else float("nan"))
    x = np.column_stack([np.ones_like(y), t, pre])
    if len(y) < 4 or min(n) < 1:
        return degenerate("ancova_cr2", n, means, "too_few_units")
    if np.linalg.matrix_rank(x) < 3:
        return degenerate("ancova_cr2", n, means, "collinear")
    beta, cov, df = cr2(x, y)
    x_bar = float(pre.mean())
    grad_base = np.array([1.0, 0.0, x_bar])
    base = float(beta[0] + beta[2] * x_bar)
    var_base = float(grad_base @ cov @ grad_base)
    cov_base_effect = float(grad_base @ cov[:, 1])
    rel, se_rel = relative(base, var_base, base + beta[1], var_base + cov[1, 1] + 2 * cov_base_effect,
                           var_base + cov_base_effect)
    out = from_estimate("ancova_cr2", n, means, float(beta[1]), float(np.sqrt(max(cov[1, 1], 0.0))), df, rel, se_rel,
                        config)
    return replace(out, var_mean_control=var_base, cov_effect_control=cov_base_effect)


def _inverse_sqrt(matrix: np.ndarray) -> np.ndarray:
    """The symmetric (generalised) inverse square root of a positive semi-definite matrix."""
    values, vectors = np.linalg.eigh(matrix)
    inv = np.where(values > 1e-12, 1 / np.sqrt(np.clip(values, 1e-300, None)), 0.0)
    return (vectors * inv) @ vectors.T


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
