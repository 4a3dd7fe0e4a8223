"""The real Hillstrom e-mail experiment: each e-mail arm against No E-Mail."""
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.proportion import proportions_ztest

from experiments.cuped import cuped
from experiments.means import welch
from experiments.proportions import two_proportion_z
from tests.stats_helpers import adjusted_stat, mean_stat

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hillstrom.csv"
if not DATA.exists():
    DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "hillstrom.csv"


@pytest.fixture(scope="module")
def hillstrom():
    if not DATA.exists():
        if os.environ.get("CI"):
            pytest.fail(f"Hillstrom data not found at {DATA}: CI has shared/ beside the clone")
        pytest.skip(f"Hillstrom data not found at {DATA}")
    return pd.read_csv(DATA)


@pytest.mark.parametrize("arm", ["Mens E-Mail", "Womens E-Mail"])
def test_email_arms_against_no_email(hillstrom, arm):
    c, t = hillstrom[hillstrom.segment == "No E-Mail"], hillstrom[hillstrom.segment == arm]
    assert len(c) == 21306 and len(t) in (21307, 21387)
    spend = welch(mean_stat(c.spend), mean_stat(t.spend))
    ref = stats.ttest_ind(t.spend, c.spend, equal_var=False)
    assert spend.p_value == pytest.approx(ref.pvalue, rel=1e-9) and spend.statistic == pytest.approx(ref.statistic, rel=1e-9)
    for metric in ("visit", "conversion"):
        res = two_proportion_z(mean_stat(c[metric]), mean_stat(t[metric]))
        z, p = proportions_ztest([t[metric].sum(), c[metric].sum()], [len(t), len(c)])
        assert res.statistic == pytest.approx(z, rel=1e-9) and res.p_value == pytest.approx(p, rel=1e-9)
        assert res.effect_abs > 0 and res.p_value < 1e-3  # both e-mails raised visits and conversions
    adjusted = cuped(adjusted_stat(c.spend, c.history), adjusted_stat(t.spend, t.history))
    x = pd.concat([c.history, t.history])
    y = pd.concat([c.spend, t.spend])
    theta = np.cov(y, x, ddof=1)[0, 1] / x.var(ddof=1)
    ref = stats.ttest_ind(t.spend - theta * (t.history - x.mean()), c.spend - theta * (c.history - x.mean()),
                          equal_var=False)
    assert adjusted.effect.p_value == pytest.approx(ref.pvalue, rel=1e-8)
    assert 0 < adjusted.variance_reduction < 0.05  # prior spend barely predicts two weeks of spend
