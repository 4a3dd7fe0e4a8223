"""Cluster-robust, DiD/ANCOVA, SRM, multiple comparisons, heterogeneity, trend, power, economics."""
import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf
from scipy import stats
from statsmodels.stats.meta_analysis import combine_effects
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower, TTestIndPower
from statsmodels.stats.proportion import proportion_effectsize

from experiments.cluster import ancova, cluster_robust, cluster_robust_by_period, difference_in_differences
from experiments.economics import economics
from experiments.heterogeneity import cochran_q
from experiments.multiple import benjamini_hochberg, holm
from experiments.novelty import effect_trend
from experiments.power import (
    design_effect,
    mde_means,
    mde_proportion,
    power_normal,
    power_t,
    sample_size_means,
    sample_size_proportions,
)
from experiments.srm import srm_test
from experiments.statistics import ClusterSumStatistic
from tests.stats_helpers import adjusted_stat, cr2_reference

rng = np.random.default_rng(7)


def clustered_rows(mixed: bool):
    """Customers in 40 stores with a store effect; arms by store, or mixed within stores."""
    rows = []
    for store in range(40):
        size = rng.integers(20, 120)
        effect = rng.normal(0, 8)
        arm = rng.integers(0, 2, size) if mixed else np.full(size, store % 2)
        y = 50 + effect + 3 * arm + rng.normal(0, 20, size)
        rows.append(pd.DataFrame({"store": store, "arm": arm, "y": y}))
    return pd.concat(rows, ignore_index=True)


@pytest.mark.parametrize("mixed", [False, True])
def test_cluster_robust_matches_statsmodels(mixed):
    df = clustered_rows(mixed)
    sums = df.groupby(["store", "arm"])["y"].agg(["count", "sum"])
    clusters = {s: tuple(ClusterSumStatistic(*(sums.loc[(s, a)] if (s, a) in sums.index else (0, 0.0)))
                         for a in (0, 1)) for s in df.store.unique()}
    res = cluster_robust(clusters)
    x = np.column_stack([np.ones(len(df)), df.arm])
    estimate, se, df_bm = cr2_reference(x, df.y.to_numpy(), list(df.store), [0, 1])
    assert res.effect_abs == pytest.approx(estimate, rel=1e-9)
    assert res.se == pytest.approx(se, rel=1e-9) and res.df == pytest.approx(df_bm, rel=1e-9)
    assert res.p_value == pytest.approx(2 * stats.t.sf(abs(estimate / se), df_bm), rel=1e-8)
    assert res.message is None  # 40 stores: no few-clusters warning
    # CR2 and statsmodels' CR1 agree as clusters grow (here 40): within a few per cent, CR2 the wider
    fit = smf.ols("y ~ arm", df).fit(cov_type="cluster", cov_kwds={"groups": df.store}, use_t=True)
    assert res.effect_abs == pytest.approx(fit.params["arm"], rel=1e-9)
    assert res.se == pytest.approx(fit.bse["arm"], rel=0.05)


def test_cluster_robust_by_period_is_the_interacted_regression_clustered_by_store():
    """A ramp (control share 80% → 50% → 20%) in 40 stores with store effects and outcomes that drift
    by period; a fourth period has control units only and is left out, as the regression must."""
    frames = []
    for period, share_t, level in ((0, 0.2, 60.0), (1, 0.5, 45.0), (2, 0.8, 30.0), (3, 0.0, 20.0)):
        for store in range(40):
            size = int(rng.integers(5, 40))
            arm = (rng.random(size) < share_t).astype(float)
            y = level + 2 * (store % 7) + 3 * arm + rng.normal(0, 15, size)
            frames.append(pd.DataFrame({"store": store, "period": period, "arm": arm, "y": y}))
    df = pd.concat(frames, ignore_index=True)
    sums = df.groupby(["store", "period", "arm"])["y"].agg(["count", "sum"])
    cells = {(s, p): tuple(ClusterSumStatistic(*(sums.loc[(s, p, a)] if (s, p, a) in sums.index else (0, 0.0)))
                           for a in (0.0, 1.0)) for s, p in df[["store", "period"]].drop_duplicates().itertuples(index=False)}
    res = cluster_robust_by_period(cells)
    used = df[df.period < 3].copy()
    for p in (1, 2):
        used[f"d{p}"] = (used.period == p).astype(float)
        used[f"d{p}"] -= used[f"d{p}"].mean()
    fit = smf.ols("y ~ arm * (d1 + d2)", used).fit(cov_type="cluster", cov_kwds={"groups": used.store}, use_t=True)
    assert res.method == "cluster_robust+post_stratified"
    assert res.effect_abs == pytest.approx(fit.params["arm"], rel=1e-9)
    # CR2 with Bell–McCaffrey df of the interacted regression, written out on the raw rows
    x = fit.model.exog
    contrast = np.array([name == "arm" for name in fit.model.exog_names], dtype=float)
    estimate, se, df_bm = cr2_reference(x, used.y.to_numpy(), list(used.store), contrast)
    assert res.effect_abs == pytest.approx(estimate, rel=1e-9)
    assert res.se == pytest.approx(se, rel=1e-9) and res.df == pytest.approx(df_bm, rel=1e-9)
    assert res.se == pytest.approx(fit.bse["arm"], rel=0.05)  # statsmodels' CR1, 40 stores
    low, high = estimate + np.array([-1, 1]) * stats.t.ppf(0.975, df_bm) * se
    assert (res.ci_low, res.ci_high) == (pytest.approx(low, rel=1e-9), pytest.approx(high, rel=1e-9))
    b = fit.params["arm"]
    a = fit.params["Intercept"]
    assert res.effect_rel == pytest.approx(b / a, rel=1e-9)
    assert res.n_control == int((df.arm == 0).sum())  # all units counted, the control-only period too
    # pooling the periods is the biased comparison here: the control arm is early-heavy
    by_arm = used.groupby(["store", "arm"])["y"].agg(["count", "sum"])
    pooled = cluster_robust({s: (ClusterSumStatistic(*by_arm.loc[(s, 0.0)]), ClusterSumStatistic(*by_arm.loc[(s, 1.0)]))
                             for s in range(40)})
    assert pooled.effect_abs < -5 and res.ci_low < 3 < res.ci_high


def store_panel():
    pre = rng.gamma(5, 2000, 60)
    arm = np.arange(60) % 2
    post = 1.05 * pre + 900 * arm + rng.normal(0, 800, 60)
    return pd.DataFrame({"pre": pre, "post": post, "arm": arm})


def test_difference_in_differences_is_welch_on_changes():
    df = store_panel()
    c, t = df[df.arm == 0], df[df.arm == 1]
    res = difference_in_differences(adjusted_stat(c.post, c.pre), adjusted_stat(t.post, t.pre))
    ref = stats.ttest_ind(t.post - t.pre, c.post - c.pre, equal_var=False)
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert res.effect_abs == pytest.approx((t.post - t.pre).mean() - (c.post - c.pre).mean(), rel=1e-9)
    # relative to the control stores' post mean: delta method on the joint covariance of the two arms'
    # mean changes and the control's mean post value, from the raw rows
    dc, dt = c.post - c.pre, t.post - t.pre
    cov = np.zeros((3, 3))  # (mean change t, mean change c, mean post c)
    cov[0, 0] = dt.var() / len(t)
    cov[1:, 1:] = np.cov(np.vstack([dc, c.post])) / len(c)
    effect, base = dt.mean() - dc.mean(), c.post.mean()
    grad = np.array([1 / base, -1 / base, -effect / base**2])
    assert res.effect_rel == pytest.approx(effect / base, rel=1e-9)
    assert res.se_rel == pytest.approx(math.sqrt(grad @ cov @ grad), rel=1e-9)


def test_ancova_matches_statsmodels_ols():
    df = store_panel()
    c, t = df[df.arm == 0], df[df.arm == 1]
    res = ancova(adjusted_stat(c.post, c.pre), adjusted_stat(t.post, t.pre))
    fit = smf.ols("post ~ arm + pre", df).fit()
    assert res.effect_abs == pytest.approx(fit.params["arm"], rel=1e-8)
    assert res.se == pytest.approx(fit.bse["arm"], rel=1e-8)
    assert res.p_value == pytest.approx(fit.pvalues["arm"], rel=1e-7)
    assert res.df == fit.df_resid
    # relative effect: arm over the control's fitted value at the mean pre-period, delta method by hand
    x_bar = df.pre.mean()
    base = fit.params["Intercept"] + fit.params["pre"] * x_bar
    grad = np.array([-fit.params["arm"] / base**2, 1 / base, -fit.params["arm"] * x_bar / base**2])
    cov = fit.cov_params().loc[["Intercept", "arm", "pre"], ["Intercept", "arm", "pre"]].to_numpy()
    assert res.effect_rel == pytest.approx(fit.params["arm"] / base, rel=1e-8)
    assert res.se_rel == pytest.approx(math.sqrt(grad @ cov @ grad), rel=1e-6)


def test_srm_matches_scipy_chisquare():
    counts, weights = [5120, 4880, 10150], [0.25, 0.25, 0.5]
    res = srm_test(counts, weights)
    ref = stats.chisquare(counts, [sum(counts) * w for w in weights])
    assert res.statistic == pytest.approx(ref.statistic, rel=1e-12) and res.p_value == pytest.approx(ref.pvalue, rel=1e-12)
    assert not res.mismatch
    assert srm_test([5400, 4600], [0.5, 0.5]).mismatch
    assert srm_test([0, 0], [0.5, 0.5]).message == "no_units"


def test_holm_and_bh_match_statsmodels():
    p = list(rng.random(12) ** 3) + [float("nan")]
    finite = [x for x in p if not math.isnan(x)]
    assert holm(p)[:-1] == pytest.approx(list(multipletests(finite, method="holm")[1]), rel=1e-12)
    assert benjamini_hochberg(p)[:-1] == pytest.approx(list(multipletests(finite, method="fdr_bh")[1]), rel=1e-12)
    assert math.isnan(holm(p)[-1])


def test_cochran_q_matches_statsmodels_meta_analysis():
    effects, ses = np.array([2.0, 0.5, -0.3, 1.4]), np.array([0.5, 0.4, 0.6, 0.3])
    res = cochran_q(effects, ses)
    ref = combine_effects(effects, ses**2)
    assert res.q == pytest.approx(ref.q, rel=1e-12)
    assert res.p_value == pytest.approx(stats.chi2.sf(ref.q, 3), rel=1e-12)
    assert res.pooled_effect == pytest.approx(ref.mean_effect_fe, rel=1e-12)
    assert res.i_squared == pytest.approx(ref.i2, rel=1e-9)


def test_trend_matches_statsmodels_wls_fixed_scale():
    weeks = np.arange(1, 9)
    effects = 6 - 0.6 * weeks + rng.normal(0, 0.3, 8)
    ses = rng.uniform(0.3, 0.6, 8)
    res = effect_trend(weeks, effects, ses)
    fit = sm.WLS(effects, sm.add_constant(weeks), weights=1 / ses**2).fit(cov_type="fixed scale")
    assert res.slope == pytest.approx(fit.params[1], rel=1e-9) and res.se == pytest.approx(fit.bse[1], rel=1e-9)
    assert res.p_value == pytest.approx(fit.pvalues[1], rel=1e-6)
    assert res.fading
    assert not effect_trend(weeks, np.full(8, 3.0) + rng.normal(0, 0.01, 8), ses).fading


@pytest.mark.parametrize("d, n1, ratio", [(0.1, 500, 1.0), (0.05, 3000, 2.0), (0.3, 40, 0.5)])
def test_power_matches_statsmodels(d, n1, ratio):
    assert power_t(d, n1, ratio) == pytest.approx(TTestIndPower().power(d, n1, 0.05, ratio), rel=1e-9)
    assert power_normal(d, n1, ratio) == pytest.approx(NormalIndPower().power(d, n1, 0.05, ratio), rel=1e-9)


def test_sample_size_and_mde_match_statsmodels():
    plan = sample_size_means(effect=2.0, sd=20.0, power=0.8, ratio=1.0, daily_units=300)
    n_ref = TTestIndPower().solve_power(0.1, power=0.8, alpha=0.05, ratio=1.0)
    assert plan.n_control == math.ceil(n_ref) and plan.days == pytest.approx(plan.n_total / 300)
    h = proportion_effectsize(0.12, 0.10)
    prop = sample_size_proportions(0.10, 0.12)
    assert prop.n_control == math.ceil(NormalIndPower().solve_power(h, power=0.8, alpha=0.05))
    d_ref = TTestIndPower().solve_power(nobs1=1000, power=0.8, alpha=0.05, ratio=1.5)
    assert mde_means(20.0, 1000, 1500) == pytest.approx(d_ref * 20.0, rel=1e-6)
    lift = mde_proportion(0.10, 5000, 5000)
    assert power_normal(abs(proportion_effectsize(0.10 + lift, 0.10)), 5000) == pytest.approx(0.8, rel=1e-6)


def test_design_effect_inflates_store_pilots():
    assert design_effect(200, 0.02) == pytest.approx(4.98)
    plain = sample_size_means(2.0, 20.0)
    stores = sample_size_means(2.0, 20.0, deff=design_effect(200, 0.02))
    assert stores.n_control == math.ceil(TTestIndPower().solve_power(0.1, power=0.8, alpha=0.05) * 4.98)
    assert stores.n_control > 4 * plain.n_control


def test_economics_by_hand():
    # +4.00 spend per customer at 30 % margin = 1.20 margin; programme costs 0.90 -> net 0.30, ROI 1/3
    res = economics(4.0, (1.0, 7.0), treatment_spend_per_customer=80.0, cost_per_customer=0.9, margin_rate=0.3,
                    projected_customers=100_000)
    assert res.incremental_margin_per_customer == pytest.approx(1.2)
    assert res.net_profit_per_customer == pytest.approx(0.3) and res.roi == pytest.approx(1 / 3)
    assert res.break_even_discount_rate == pytest.approx(1.2 / 80.0)
    assert (res.net_profit_low, res.net_profit_high) == (pytest.approx(-0.6), pytest.approx(1.2))
    assert res.projected_net_profit == pytest.approx(30_000) and res.projected_incremental_revenue == pytest.approx(400_000)
