"""A planted NPS harm as a guardrail stops a pilot (recommendation and the scheduler's auto-pause); the
per-group economics against a hand computation on the raw rows; the report names the definition's version."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import text

from experiments.economics import group_economics
from pilot.db import db
from pilot.models import AuditEvent
from pilot.rollout import get_pilot
from pilot.scheduler import analyse_running
from tests.factories import NOW, login, plant
from tests.test_analysis import raw_units
from tests.test_defined_metrics import analyse, event_rows, insert_events, raw


def test_group_economics_by_hand():
    # control spends 100 at no cost, a participant 112 at a cost of 2.5; margin 30%: the uplift's margin is
    # 3.6, so a participant is worth 1.1 more (CI of the uplift 4..20 → 1.2 − 2.5 … 6 − 2.5)
    g = group_economics("families", (400, 410), (100.0, 112.0), 12.0, (4.0, 20.0), (0.0, 2.5), 0.3)
    assert g.participant_value == pytest.approx(112 * 0.3 - 2.5) and g.ordinary_value == pytest.approx(30.0)
    assert g.net_per_participant == pytest.approx(1.1) and (g.net_low, g.net_high) == pytest.approx((-1.3, 3.5))
    assert g.out_earns is None
    assert group_economics("x", (2, 2), (1, 2), 10.0, (5.0, 15.0), (0.0, 1.0), 0.5).out_earns is True
    assert group_economics("x", (2, 2), (1, 2), 1.0, (-1.0, 3.0), (0.0, 2.0), 0.5).out_earns is False


def test_planted_nps_harm_stops_the_pilot_and_the_scheduler_pauses_it(app, client, tokens):
    key = plant(app, "clear_win", customers=900, stores=10, key="npsharm", post_weeks=4)
    insert_events(app, event_rows(app, key, seed=3, nps_shift={"bonus": -2.0}, nps_mean=8.5))
    with app.app_context():
        pilot = get_pilot(db.session, key)
        pilot.guardrails = [*pilot.guardrails, {"metric": "nps", "max_harm": 0.10}]  # the shipped definition
        db.session.commit()
    run_id, config, results, rec = analyse(app, key)
    nps = next(d for d in config["defined_metrics"] if d["key"] == "nps")
    assert nps["version"] == 1 and nps["measure"]["aggregation"] == "nps"
    row = next(r for r in results["metrics"] if r["metric"] == "nps")
    assert row["role"] == "guardrail" and row["label"] == "nps (v1)" and row["harmed"] and row["harmed_sequential"]
    # NPS as surveys define it, per arm from the raw rows: each answering customer's last answer scored
    a, e, _, _ = raw(app, key)
    answers = e[e.type == "survey_nps"].merge(a, on="customer_id")
    answers = answers[(answers.occurred_at >= answers.assigned_at) & (answers.occurred_at < pd.Timestamp(NOW))]
    last = answers.sort_values(["occurred_at", "id"]).groupby("customer_id").last()
    last["score"] = np.select([last.value >= 9, last.value >= 7], [100.0, 0.0], -100.0)
    by_arm = last.groupby("variant").score.mean()
    assert row["mean_control"] == pytest.approx(by_arm["control"], rel=1e-9)
    assert row["mean_treatment"] == pytest.approx(by_arm["bonus"], rel=1e-9)
    assert row["n_control"] == (a.variant == "control").sum()  # every assigned unit counts
    assert rec["decision"] == "stop" and rec["action"] == {"type": "rollback"}
    # NPS (a ratio of two sums from one source, the surveys) has its weeks in the drill-down
    nps_weeks = [w for w in results["metric_weeks"] if w["metric"] == "nps"]
    assert nps_weeks and {w["week"] for w in nps_weeks} >= {1, 2}
    assert any(r["code"] == "guardrail_harmed" and r["metric"] == "nps" for r in rec["reasons"])
    # the report names the definition's version
    login(client, tokens["analyst"])
    page = client.get(f"/analyses/{run_id}").get_data(as_text=True)
    assert "nps (v1)" in page
    with app.app_context():
        out = analyse_running(db.session)
        assert [p["pilot"] for p in out["paused"]] == [key] and "guardrail nps (v1) harmed" in out["paused"][0]["reason"]
        assert get_pilot(db.session, key).state == "paused"
        assert db.session.query(AuditEvent).filter_by(action="auto_pause", entity_id=key).count() == 1


def test_group_economics_against_the_raw_rows(app, client, tokens):
    key = plant(app, "clear_win", customers=900, stores=10, key="groupecon", post_weeks=4)
    run_id, config, results, _ = analyse(app, key)
    u = raw_units(app, key)
    with app.app_context():
        pilot = get_pilot(db.session, key)
        conn = db.session.connection()
        t = pd.read_sql(text("SELECT t.customer_id, t.amount, t.discount_cost, t.occurred_at, a.variant, "
                             "a.assigned_at FROM transactions t JOIN assignments a ON a.customer_id = t.customer_id "
                             "AND a.pilot_id = :p"), conn, params={"p": pilot.id})
        bonus = next(v.parameters for v in pilot.programme.variants if v.key == "bonus")
    for col in ("occurred_at", "assigned_at"):
        t[col] = pd.to_datetime(t[col], utc=True, format="mixed")
    t = t[(t.occurred_at >= t.assigned_at) & (t.occurred_at < pd.Timestamp(NOW))]
    rate = bonus["points_per_unit"] * bonus["point_value"] * (1 - bonus["breakage"])
    amount = t.amount.astype(float)
    modelled = np.where((t.variant == "bonus") & (amount > 0), amount * rate, 0.0)
    t["cost"] = np.where(t.discount_cost.isna(), modelled, t.discount_cost.astype(float))
    u = u.join(t.groupby("customer_id").cost.sum()).fillna({"cost": 0.0})
    table = {g["group"]: g for g in results["economics"]["bonus"]["groups"]}
    effects = {r["group"]: r for r in results["groups"] if r["arm"] == "bonus"}  # spend: the primary metric
    assert set(table) == set(u.grp)
    margin = config["margin_rate"]
    for grp, g in table.items():
        c, tr = u[(u.grp == grp) & (u.variant == "control")], u[(u.grp == grp) & (u.variant == "bonus")]
        gap = tr.cost.mean() - c.cost.mean()
        assert (g["n_control"], g["n_treatment"]) == (len(c), len(tr))
        assert g["cost_per_participant"] == pytest.approx(gap, rel=1e-9)
        assert g["participant_value"] == pytest.approx(tr.spend.mean() * margin - tr.cost.mean(), rel=1e-9)
        assert g["ordinary_value"] == pytest.approx(c.spend.mean() * margin - c.cost.mean(), rel=1e-9)
        assert g["net_per_participant"] == pytest.approx(effects[grp]["effect_abs"] * margin - gap, rel=1e-9)
        assert (g["net_low"], g["net_high"]) == pytest.approx(
            (effects[grp]["ci_low"] * margin - gap, effects[grp]["ci_high"] * margin - gap), rel=1e-9)
    # in the report (a table per group) and the exports
    login(client, tokens["analyst"])
    page = client.get(f"/analyses/{run_id}").get_data(as_text=True)
    assert 'id="group-economics-table"' in page and "out-earn" in page
    csv_text = client.get(f"/analyses/{run_id}/tables/group_economics.csv").get_data(as_text=True)
    assert csv_text.splitlines()[0].startswith("arm,group,n_control,n_treatment,participant_value")
    assert len(csv_text.splitlines()) == 1 + len(table)
