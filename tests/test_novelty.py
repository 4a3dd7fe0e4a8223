"""A novelty effect that is caught: the fading test (each customer's first week minus the mean of the
later half of its weeks, between the arms, one-sided) flags the `novelty` preset, equals Welch on the raw rows, and
flags a constant effect no more often than α."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sqlalchemy import text

from experiments.means import welch
from experiments.novelty import fading_contrast
from pilot import analysis_runs, create_app
from pilot.auth import CLI
from pilot.db import db
from pilot.rollout import get_pilot
from tests.factories import NOW, plant
from tests.stats_helpers import mean_stat


def analysed(app, seed):
    """`pilot simulate --scenario novelty --seed <seed>` on a fresh database, analysed at NOW."""
    key = plant(app, "novelty", seed=seed)
    with app.app_context():
        session = db.session
        pilot = get_pilot(session, key)
        run = analysis_runs.create_run(session, CLI.actor, pilot, cutoff=NOW)
        analysis_runs.execute(session, run)
        session.commit()
        return pilot.id, run.results, run.recommendation


def test_the_novelty_preset_is_caught_in_most_seeds_and_the_test_is_welch_on_the_raw_rows(tmp_path):
    caught = 0
    for seed in (11, 12, 13, 14):  # the preset's seed and the next three, each on its own SQLite database
        app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path}/novelty{seed}.db",
                          "AUTO_MIGRATE": True, "SECRET_KEY": "test"})
        pilot_id, results, rec = analysed(app, seed)
        trend = results["trend"]["bonus"]
        caught += rec["action"]["type"] == "make_dynamic"
        assert trend["test"] == "first_week_vs_later" and (trend["p_value"] < 0.05) == trend["fading"]
    assert caught >= 3
    # the last seed's contrast from the raw rows: per customer, week 1 − mean of the later half of its full weeks
    with app.app_context():
        a = pd.read_sql(text("SELECT customer_id, variant, assigned_at FROM assignments WHERE pilot_id = :p"),
                        db.session.connection(), params={"p": pilot_id})
        tx = pd.read_sql(text("SELECT customer_id, occurred_at, amount FROM transactions"), db.session.connection())
    for frame, column in ((a, "assigned_at"), (tx, "occurred_at")):
        frame[column] = pd.to_datetime(frame[column], utc=True, format="mixed")
    week = pd.Timedelta(days=7)
    a["full"] = (pd.Timestamp(NOW) - a.assigned_at) // week
    tx = tx.merge(a, on="customer_id")
    tx = tx[(tx.occurred_at >= tx.assigned_at) & (tx.occurred_at < pd.Timestamp(NOW))]
    tx["week"] = (tx.occurred_at - tx.assigned_at) // week
    weekly = tx.groupby(["customer_id", "week"]).amount.sum().astype(float).unstack(fill_value=0.0)
    weekly = weekly.reindex(a.customer_id, fill_value=0.0)
    units = a.set_index("customer_id")
    units = units[units.full >= 2]
    cols = weekly.loc[units.index]
    late = [cols[w].where((units.full > w) & (2 * w >= units.full), 0.0) for w in cols.columns if w >= 1]
    d = cols[0] - sum(late) / (units.full // 2)
    ref = stats.ttest_ind(d[units.variant == "bonus"], d[units.variant == "control"], equal_var=False)
    effect = d[units.variant == "bonus"].mean() - d[units.variant == "control"].mean()
    trend = results["trend"]["bonus"]
    assert trend["early_minus_late"] == pytest.approx(effect, rel=1e-9)
    assert trend["early_minus_late_se"] == pytest.approx(effect / ref.statistic, rel=1e-9)
    assert trend["p_value"] == pytest.approx(ref.pvalue / 2 if ref.statistic > 0 else 1 - ref.pvalue / 2, rel=1e-7)


def test_a_constant_effect_is_flagged_as_fading_at_most_alpha_of_the_time():
    """Customers with persistent visit rates and baskets (correlated weeks), a constant +8% lift in
    every week: the one-sided test at α = 0.05 flags it about 5% of the time."""
    rng = np.random.default_rng(23)
    flagged, reps, n, weeks = 0, 400, 1500, 6
    for _ in range(reps):
        arm = rng.integers(0, 2, 2 * n)
        rate = rng.gamma(2.0, 0.5, 2 * n) * (1 + 0.08 * arm)
        basket = 30 * np.exp(rng.normal(0, 0.3, 2 * n))
        visits = rng.poisson(rate[:, None] * (1 + 0.1 * np.sin(np.arange(weeks) / 3))[None, :])
        spend = visits * basket[:, None] * np.exp(rng.normal(-0.125, 0.5, visits.shape))
        d = spend[:, 0] - spend[:, weeks // 2:].mean(axis=1)  # first week − the later half
        contrast = welch(mean_stat(d[arm == 0]), mean_stat(d[arm == 1]))
        flagged += fading_contrast(contrast.effect_abs, contrast.se, contrast.df, 1.0).fading
    assert flagged / reps <= 0.05 + 2.5 * np.sqrt(0.05 * 0.95 / reps)


def test_a_fading_effect_is_advised_before_narrowing_and_reads_the_first_week_not_the_average():
    """The decision's branches for a novelty (pilot.recommendation): fading comes before narrowing to
    groups, and needs the first week's effect the good way, whatever the stage's average says."""
    from pilot.recommendation import recommend
    from tests.test_recommendation import CONFIG, FADING, OK, metrics, results, row, tiered

    def week(effect_abs: float) -> dict:
        return {"arm": "bonus", "week": 1, "metric": "spend_per_customer_week", "effect_abs": effect_abs}

    both = {**tiered(), "trend": FADING, "weeks": [week(3.0)]}  # works in some groups, and fades
    assert recommend(CONFIG, both, OK)["action"] == {"type": "make_dynamic", "arm": "bonus"}
    assert recommend(CONFIG, tiered(), OK)["action"]["type"] == "narrow_groups"  # no fading: narrowed
    # a novelty that wore off: the stage's average is below zero, the first week was up
    worn = results(trend=FADING, metrics=metrics(row("bonus", -0.01, 0.6), row("gold", -0.02, 0.7)),
                   weeks=[week(2.5), {**week(-1.0), "week": 2}])
    assert recommend(CONFIG, worn, OK)["action"] == {"type": "make_dynamic", "arm": "bonus"}
    # fading towards harm (the first week already down) is not a novelty to keep
    harm = {**worn, "weeks": [week(-0.5), {**week(-3.0), "week": 2}]}
    assert recommend(CONFIG, harm, OK)["action"]["type"] != "make_dynamic"
