"""Welch, two-proportion z, ratio delta method and CUPED against scipy/statsmodels on raw rows."""
import numpy as np
import pytest
import statsmodels.api as sm
from scipy import stats
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

from experiments.cuped import cuped
from experiments.means import welch
from experiments.proportions import two_proportion_z
from experiments.ratio import ratio_delta
from experiments.results import InferenceConfig
from experiments.statistics import RatioStatistic, SampleMeanStatistic
from tests.stats_helpers import adjusted_stat, mean_stat, ratio_stat

rng = np.random.default_rng(20261125)
CONTROL = rng.gamma(2.0, 20.0, 3000)
TREATMENT = rng.gamma(2.1, 20.5, 2500)


def relative_by_hand(yc, yt):
    """Delta-method relative effect computed straight from the rows."""
    mc, mt = yc.mean(), yt.mean()
    vc, vt = yc.var(ddof=1) / len(yc), yt.var(ddof=1) / len(yt)
    return mt / mc - 1, np.sqrt(vt / mc**2 + mt**2 * vc / mc**4)


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_welch_matches_scipy(alternative):
    res = welch(mean_stat(CONTROL), mean_stat(TREATMENT), InferenceConfig(0.05, alternative))
    ref = stats.ttest_ind(TREATMENT, CONTROL, equal_var=False, alternative=alternative)
    ci = ref.confidence_interval(0.95)
    assert res.statistic == pytest.approx(ref.statistic, rel=1e-9)
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert res.df == pytest.approx(ref.df, rel=1e-9)
    assert res.se == pytest.approx((TREATMENT.mean() - CONTROL.mean()) / ref.statistic, rel=1e-9)
    assert (res.ci_low, res.ci_high) == (pytest.approx(ci.low, rel=1e-9), pytest.approx(ci.high, rel=1e-9))
    rel, se_rel = relative_by_hand(CONTROL, TREATMENT)
    assert res.effect_rel == pytest.approx(rel, rel=1e-12) and res.se_rel == pytest.approx(se_rel, rel=1e-9)


def test_welch_golden_values():
    res = welch(SampleMeanStatistic(1000, 52_000.0, 3_100_000.0), SampleMeanStatistic(1000, 54_000.0, 3_330_000.0))
    # variances by hand: (3.1e6 - 52000^2/1000)/999 = 396.396..., (3.33e6 - 54000^2/1000)/999 = 414.414...
    # se = sqrt(0.396396 + 0.414414) = 0.900450; p as scipy.stats.ttest_ind_from_stats gives it (0.026455)
    assert (round(res.effect_abs, 5), round(res.se, 5), round(res.p_value, 5)) == (2.0, 0.90045, 0.02646)
    assert (round(res.effect_rel, 5), round(res.ci_rel_low, 5), round(res.ci_low, 5)) == (0.03846, 0.00386, 0.23408)


def test_statistics_pool_with_plus():
    a, b = mean_stat(CONTROL[:1000]), mean_stat(CONTROL[1000:])
    pooled = a + b
    assert pooled.n == 3000 and pooled.mean == pytest.approx(CONTROL.mean(), rel=1e-12)
    assert pooled.variance == pytest.approx(CONTROL.var(ddof=1), rel=1e-9)


def test_degenerate_data_gives_coded_results():
    one = welch(mean_stat([1.0]), mean_stat([1.0, 2.0]))
    assert one.message == "too_few_units" and np.isnan(one.p_value)
    flat = welch(mean_stat([3.0, 3.0]), mean_stat([3.0, 3.0, 3.0]))
    assert flat.message == "zero_variance"
    zero = welch(mean_stat([0.0, 0.0, 0.0, 0.0]), mean_stat([1.0, 2.0, 3.0]))
    assert zero.message == "zero_control_mean" and np.isfinite(zero.p_value)


def test_two_proportion_z_matches_statsmodels():
    yc, yt = (rng.random(4000) < 0.10).astype(float), (rng.random(3800) < 0.12).astype(float)
    res = two_proportion_z(mean_stat(yc), mean_stat(yt))
    z, p = proportions_ztest([yt.sum(), yc.sum()], [len(yt), len(yc)])
    low, high = confint_proportions_2indep(yt.sum(), len(yt), yc.sum(), len(yc), method="wald", compare="diff")
    assert res.statistic == pytest.approx(z, rel=1e-9) and res.p_value == pytest.approx(p, rel=1e-9)
    assert res.ci_low == pytest.approx(low, rel=1e-9) and res.ci_high == pytest.approx(high, rel=1e-9)
    assert res.se == pytest.approx(np.sqrt(yc.mean() * (1 - yc.mean()) / len(yc) + yt.mean() * (1 - yt.mean()) / len(yt)),
                                   rel=1e-12)


def test_ratio_delta_method_by_hand():
    visits_c, visits_t = rng.poisson(3, 2000) + 1, rng.poisson(3.2, 2100) + 1
    spend_c, spend_t = visits_c * rng.gamma(2, 10, 2000), visits_t * rng.gamma(2, 10.5, 2100)
    res = ratio_delta(ratio_stat(spend_c, visits_c), ratio_stat(spend_t, visits_t))

    def var_ratio(m, d):  # first-order Taylor expansion of mean(m)/mean(d), from the rows
        cov = np.cov(m, d, ddof=1)
        mm, md = m.mean(), d.mean()
        return (cov[0, 0] / md**2 - 2 * mm * cov[0, 1] / md**3 + mm**2 * cov[1, 1] / md**4) / len(m)

    rc, rt = spend_c.sum() / visits_c.sum(), spend_t.sum() / visits_t.sum()
    se = np.sqrt(var_ratio(spend_c, visits_c) + var_ratio(spend_t, visits_t))
    assert res.effect_abs == pytest.approx(rt - rc, rel=1e-12)
    assert res.se == pytest.approx(se, rel=1e-9)
    assert res.p_value == pytest.approx(2 * stats.norm.sf(abs(rt - rc) / se), rel=1e-9)
    assert res.df is None


def test_ratio_se_equals_the_statsmodels_sandwich_on_the_rows():
    """Σm/Σd is the weighted regression of m on d through the origin with weights 1/d; the delta
    method's variance, (n − 1) in the denominator, is that regression's HC1 sandwich variance."""
    visits_c, visits_t = rng.poisson(2, 3000) + 1, rng.poisson(2.1, 2800) + 1
    spend_c, spend_t = visits_c * rng.gamma(2, 10, 3000), visits_t * rng.gamma(2, 10.4, 2800)
    res = ratio_delta(ratio_stat(spend_c, visits_c), ratio_stat(spend_t, visits_t))
    fits = [sm.WLS(m, d.astype(float), weights=1.0 / d).fit(cov_type="HC1")
            for m, d in ((spend_c, visits_c), (spend_t, visits_t))]
    assert res.effect_abs == pytest.approx(fits[1].params[0] - fits[0].params[0], rel=1e-12)
    assert res.se == pytest.approx(np.hypot(fits[0].bse[0], fits[1].bse[0]), rel=1e-9)


def test_ratio_delta_golden_values():
    control = RatioStatistic(1000, 30_000.0, 1_500_000.0, 3_000.0, 12_000.0, 120_000.0)
    treatment = RatioStatistic(1000, 33_000.0, 1_800_000.0, 3_100.0, 13_000.0, 135_000.0)
    res = ratio_delta(control, treatment)
    # ratios 30000/3000 = 10 and 33000/3100 = 10.645161; Var(ratio) = (s²_m − 2R·s_md + R²·s²_d) / (n·d̄²)
    # with the (n − 1) sample moments: 0.0333667 (control) + 0.0415566 (treatment), se = √0.0749233
    assert (round(res.effect_abs, 5), round(res.se, 5), round(res.p_value, 5)) == (0.64516, 0.27372, 0.01842)
    assert (round(res.effect_rel, 5), round(res.ci_low, 5), round(res.ci_rel_low, 5)) == (0.06452, 0.10868, 0.0093)


def test_cuped_equals_welch_on_adjusted_rows():
    pre_c, pre_t = rng.gamma(2, 20, 3000), rng.gamma(2, 20, 2800)
    post_c = 0.7 * pre_c + rng.normal(10, 15, 3000)
    post_t = 0.7 * pre_t + rng.normal(12, 15, 2800)
    out = cuped(adjusted_stat(post_c, pre_c), adjusted_stat(post_t, pre_t))
    x = np.concatenate([pre_c, pre_t])
    y = np.concatenate([post_c, post_t])
    theta = np.cov(y, x, ddof=1)[0, 1] / x.var(ddof=1)
    adj_c, adj_t = post_c - theta * (pre_c - x.mean()), post_t - theta * (pre_t - x.mean())
    ref = stats.ttest_ind(adj_t, adj_c, equal_var=False)
    assert out.theta == pytest.approx(theta, rel=1e-9)
    assert out.effect.p_value == pytest.approx(ref.pvalue, rel=1e-8)
    assert out.effect.se == pytest.approx(np.sqrt(adj_c.var(ddof=1) / 3000 + adj_t.var(ddof=1) / 2800), rel=1e-9)
    rel, se_rel = relative_by_hand(adj_c, adj_t)
    assert out.effect.effect_rel == pytest.approx(rel, rel=1e-9) and out.effect.se_rel == pytest.approx(se_rel, rel=1e-9)
    plain = welch(mean_stat(post_c), mean_stat(post_t))
    assert out.effect.se < plain.se and out.variance_reduction == pytest.approx(1 - out.effect.se**2 / plain.se**2)


def test_cuped_constant_covariate_is_coded():
    out = cuped(adjusted_stat([1, 2, 3], [5, 5, 5]), adjusted_stat([2, 3, 4], [5, 5, 5]))
    assert out.effect.message == "constant_covariate"
