"""Post-stratification against statsmodels: the fully interacted regression with centred period indicators."""
import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats

from experiments.means import welch
from experiments.results import InferenceConfig
from experiments.stratified import post_stratified
from tests.stats_helpers import mean_stat

rng = np.random.default_rng(20261126)


def ramp_rows() -> pd.DataFrame:
    """Three periods with 80/20, 50/50 and 20/80 control/treatment, outcomes that drift by period
    (earlier units were exposed longer) and a true effect of +3 in every period."""
    frames = []
    for period, (n, share_t, level) in enumerate(((1500, 0.2, 60.0), (1200, 0.5, 45.0), (1800, 0.8, 30.0))):
        treated = (rng.random(n) < share_t).astype(float)
        y = rng.gamma(2.0, level / 2.0, n) + 3.0 * treated
        frames.append(pd.DataFrame({"y": y, "treated": treated, "period": period}))
    return pd.concat(frames, ignore_index=True)


def test_post_stratified_equals_the_interacted_regression_with_hc2():
    rows = ramp_rows()
    strata = [welch(mean_stat(g.y[g.treated == 0].to_numpy()), mean_stat(g.y[g.treated == 1].to_numpy()))
              for _, g in rows.groupby("period")]
    res = post_stratified(strata)
    # Lin's estimator: treated × (period indicators centred at their means), HC2 errors
    for p in (1, 2):
        rows[f"d{p}"] = (rows.period == p).astype(float)
        rows[f"d{p}"] -= rows[f"d{p}"].mean()
    fit = smf.ols("y ~ treated * (d1 + d2)", data=rows).fit(cov_type="HC2")
    assert res.effect_abs == pytest.approx(fit.params["treated"], rel=1e-9)
    assert res.se == pytest.approx(fit.bse["treated"], rel=1e-9)
    assert res.p_value == pytest.approx(2 * stats.norm.sf(abs(fit.params["treated"] / fit.bse["treated"])), rel=1e-7)
    low, high = fit.conf_int(alpha=0.05).loc["treated"]  # normal reference under the robust covariance
    assert (res.ci_low, res.ci_high) == (pytest.approx(low, rel=1e-9), pytest.approx(high, rel=1e-9))
    assert res.method == "welch+post_stratified" and res.n_control + res.n_treatment == len(rows)
    # the pooled comparison is the biased one here: the control arm is early-heavy
    pooled = welch(mean_stat(rows.y[rows.treated == 0].to_numpy()), mean_stat(rows.y[rows.treated == 1].to_numpy()))
    assert pooled.effect_abs < -5 and pooled.p_value < 1e-6
    assert res.ci_low < 3.0 < res.ci_high
    # relative effect: treated coefficient over the intercept (the standardised control mean), its
    # error by the delta method on the same HC2 covariance, the intercept's error included
    a, b = fit.params["Intercept"], fit.params["treated"]
    assert res.mean_control == pytest.approx(a, rel=1e-9)
    assert res.effect_rel == pytest.approx(b / a, rel=1e-9)
    cov = fit.cov_params().loc[["Intercept", "treated"], ["Intercept", "treated"]].to_numpy()
    grad = np.array([-b / a**2, 1 / a])
    assert res.se_rel == pytest.approx(np.sqrt(grad @ cov @ grad), rel=1e-9)
    assert res.se_rel > res.se / abs(a)  # the control mean's error widens it


def test_a_period_without_a_contrast_is_left_out():
    rows = ramp_rows()
    strata = [welch(mean_stat(g.y[g.treated == 0].to_numpy()), mean_stat(g.y[g.treated == 1].to_numpy()))
              for _, g in rows.groupby("period")]
    only_control = welch(mean_stat(rng.gamma(2.0, 30.0, 400)), mean_stat(np.array([])))
    assert not only_control.ok
    with_empty = post_stratified(strata + [only_control])
    without = post_stratified(strata)
    assert with_empty.effect_abs == pytest.approx(without.effect_abs, rel=1e-12)
    assert with_empty.se == pytest.approx(without.se, rel=1e-12)
    assert with_empty.n_control == without.n_control + 400
    assert post_stratified([only_control]).message == "too_few_units"
    assert post_stratified([], InferenceConfig()).message == "too_few_units"
