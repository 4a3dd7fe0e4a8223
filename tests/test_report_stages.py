"""The report's evidence across stages: the primary effect pooled over the stages' latest analyses,
stratified by stage (each stage compares its own customers), checked against a direct computation on
the raw rows (CUPED per stage, Welch errors by statsmodels) and Cochran's Q against statsmodels."""
from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import text
from statsmodels.stats.meta_analysis import combine_effects
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from pilot import analysis_runs
from pilot.analysis_runs import PRE_DAYS
from pilot.auth import CLI
from pilot.db import db
from pilot.models import AnalysisRun
from pilot.rollout import get_pilot
from tests.factories import NOW, login, plant
from tests.test_reports import page_text


def cuped_effect(u: pd.DataFrame) -> tuple[float, float, int, int]:
    """Bonus − control in spend, CUPED on pre-period spend (θ over both arms), Welch error (statsmodels)."""
    theta = np.cov(u.spend, u.pre_spend)[0, 1] / u.pre_spend.var()
    adjusted = u.spend - theta * (u.pre_spend - u.pre_spend.mean())
    t, c = adjusted[u.variant == "bonus"], adjusted[u.variant == "control"]
    compare = CompareMeans(DescrStatsW(t.to_numpy()), DescrStatsW(c.to_numpy()))
    return t.mean() - c.mean(), compare.std_meandiff_separatevar, len(c), len(t)


def test_the_primary_effect_pooled_across_stages_beside_each_stage(app, client, tokens):
    key = plant(app, "clear_win", customers=1600, stores=8, key="pooled")
    with app.app_context():
        pilot = get_pilot(db.session, key)
        first, second = pilot.stage(1), pilot.stage(2)
        # half the customers joined in stage 2 (a customer belongs to the stage it was assigned in)
        db.session.execute(text("UPDATE assignments SET stage = 2 WHERE pilot_id = :p AND customer_id % 2 = 0"),
                           {"p": pilot.id})
        run1 = analysis_runs.create_run(db.session, CLI.actor, pilot, cutoff=NOW - timedelta(days=3))
        analysis_runs.execute(db.session, run1)
        pilot.current_stage, second.started_at = 2, first.started_at
        db.session.commit()
        run2 = analysis_runs.create_run(db.session, CLI.actor, pilot, cutoff=NOW)
        analysis_runs.execute(db.session, run2)
        db.session.commit()
        cutoffs = {1: run1.cutoff, 2: run2.cutoff}
        run_id, alpha = run2.id, run2.config["alpha"]
        conn = db.session.connection()
        a = pd.read_sql(text("SELECT customer_id, variant, stage, assigned_at FROM assignments WHERE pilot_id = :p"),
                        conn, params={"p": pilot.id})
        t = pd.read_sql(text("SELECT customer_id, occurred_at, amount FROM transactions"), conn)
        started = pd.Timestamp(pilot.started_at)
        stored = {r.stage: r.results for r in db.session.query(AnalysisRun).filter_by(pilot_id=pilot.id)}
    a["assigned_at"] = pd.to_datetime(a.assigned_at, utc=True, format="mixed")
    t["occurred_at"] = pd.to_datetime(t.occurred_at, utc=True, format="mixed")
    started = started.tz_localize("UTC") if started.tzinfo is None else started
    j = t.merge(a, on="customer_id")
    pre = j[(j.occurred_at >= started - pd.Timedelta(days=PRE_DAYS)) & (j.occurred_at < started)]
    per_stage = {}
    for stage, cutoff in cutoffs.items():
        post = j[(j.stage == stage) & (j.occurred_at >= j.assigned_at) & (j.occurred_at < pd.Timestamp(cutoff))]
        u = a[a.stage == stage].set_index("customer_id")
        u["spend"] = post.groupby("customer_id").amount.sum().reindex(u.index).fillna(0.0)
        u["pre_spend"] = pre.groupby("customer_id").amount.sum().reindex(u.index).fillna(0.0)
        per_stage[stage] = cuped_effect(u)
        primary = next(r for r in stored[stage]["metrics"] if r["role"] == "primary")
        assert primary["effect_abs"] == pytest.approx(per_stage[stage][0], rel=1e-7)
        assert primary["se"] == pytest.approx(per_stage[stage][1], rel=1e-7)
    units = {s: c + t for s, (_, _, c, t) in per_stage.items()}
    weights = {s: n / sum(units.values()) for s, n in units.items()}
    pooled = sum(weights[s] * per_stage[s][0] for s in per_stage)
    se = np.sqrt(sum(weights[s] ** 2 * per_stage[s][1] ** 2 for s in per_stage))
    meta = combine_effects(np.array([per_stage[s][0] for s in (1, 2)]), np.array([per_stage[s][1] ** 2 for s in (1, 2)]))

    login(client, tokens["analyst"])
    html = client.get(f"/analyses/{run_id}").get_data(as_text=True)
    section = page_text(html[html.index('id="across-stages"'):html.index("<h2>Figures")])
    low, high = pooled - 1.959963985 * se, pooled + 1.959963985 * se
    n_control = sum(c for _, _, c, _ in per_stage.values())
    n_treatment = sum(t for _, _, _, t in per_stage.values())
    assert (f"bonus 1, 2 {n_control} / {n_treatment} {pooled:+.3g} {low:+.3g} to {high:+.3g}") in section
    assert f"Cochran's Q = {meta.q:.2f} on 1 df" in section
    assert "not a forecast for the next stage's scope" in section
    # each stage's own result stays beside it
    stages = page_text(html[html.index('id="stages"'):html.index('id="across-stages"')])
    for stage in (1, 2):
        primary = next(r for r in stored[stage]["metrics"] if r["role"] == "primary")
        assert f"bonus {primary['effect_rel']:+.1%}" in stages
    assert alpha == 0.05
