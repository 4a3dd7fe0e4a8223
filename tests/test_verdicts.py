"""Every arm judged (pilot.verdicts): planted three-arm pilots, through the API and the scheduler.

The harmed arm is not the best one on the primary metric, so only a verdict per arm can find it;
the comparison with the best arm is checked against statsmodels on the raw rows."""
from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select, text
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from pilot.db import db
from pilot.models import AuditEvent, WebhookDelivery
from pilot.rollout import get_pilot
from pilot.scheduler import run_all_once
from pilot.simulate import BONUS, CONTROL, TIERS
from tests.factories import NOW, login, plant

THREE = {"control": 0.34, "bonus": 0.33, "tiers": 0.33}


def plant_three(app, tiers_effect: dict, key: str, customers: int = 4000) -> str:
    """Control, bonus points (+10% visits: the best arm on spend) and tiers with `tiers_effect`."""
    return plant(app, "clear_win", key=key, customers=customers, variants=[CONTROL, BONUS, TIERS],
                 allocation=THREE, effects={"bonus": {"*": {"visits": 0.10}}, "tiers": {"*": tiers_effect}})


def verdicts(run: dict) -> dict[str, str]:
    return {v["arm"]: v["verdict"] for v in run["recommendation"]["verdicts"]}


def test_a_harmful_arm_that_is_not_the_best_is_dropped_applied_and_auto_dropped(app, client, auth, tokens):
    # tiers: +12% visits, −10% basket: about +1% spend (bonus leads), spend per visit −10% (tolerated: 3%)
    key = plant_three(app, {"visits": 0.12, "basket": -0.10}, "three")
    m = auth("manager")
    run = client.post(f"/api/v1/pilots/{key}/analyses", json={"cutoff": NOW.isoformat()}, headers=m).json
    rows = {(r["arm"], r["metric"]): r for r in run["results"]["metrics"]}
    assert rows[("bonus", "spend_per_customer")]["effect_rel"] > rows[("tiers", "spend_per_customer")]["effect_rel"]
    assert verdicts(run) == {"bonus": "keep", "tiers": "drop_harm"}
    assert run["results"]["verdicts"] == run["recommendation"]["verdicts"]
    rec, harm = run["recommendation"], rows[("tiers", "spend_per_visit")]
    assert (rec["decision"], rec["arm"], rec["action"]) == ("advance", "bonus", {"type": "advance",
                                                                                  "drop_arms": ["tiers"]})
    reason = next(r for r in rec["reasons"] if r["code"] == "guardrail_harmed")
    assert (reason["arm"], reason["metric"], reason["effect_rel"], reason["ci_rel"], reason["max_harm"]) == \
        ("tiers", "spend_per_visit", harm["effect_rel"], [harm["ci_rel_low"], harm["ci_rel_high"]], 0.03)
    assert harm["effect_rel"] < -0.03 and harm["p_value"] < 0.05
    assert rec["summary"].startswith("advance with bonus; drop tiers: spend_per_visit -")
    # the report and its exports show every arm's verdict
    browser = app.test_client()
    login(browser, tokens["analyst"])
    page = browser.get(f"/analyses/{run['id']}").get_data(as_text=True)
    assert '<td class="verdict drop_harm">drop harm</td>' in page and reason["message"] in page
    exported = client.get(f"/analyses/{run['id']}/tables/verdicts.json", headers=m).json
    assert [(v["arm"], v["verdict"]) for v in exported] == [("bonus", "keep"), ("tiers", "drop_harm")]
    assert client.get(f"/analyses/{run['id']}/tables/verdicts.csv", headers=m).get_data(as_text=True) \
        .startswith("arm,verdict,codes,reasons\n")

    # the scheduler (always-valid test) sets the harmed arm's weight to 0, notifies, and the pilot runs on
    hook = client.post("/api/v1/webhooks", json={"url": "http://127.0.0.1:9/hook", "events": ["arm.dropped"]},
                       headers=auth("admin"))
    assert hook.status_code == 201, hook.json
    out = {r["job"]: r for r in run_all_once(app, 60)}["analyse_running"]["detail"]
    with app.app_context():  # the notification is queued for the webhook (its delivery is tested in test_webhooks)
        [queued] = db.session.scalars(select(WebhookDelivery).where(WebhookDelivery.event == "arm.dropped")).all()
        assert queued.payload["data"]["arms"] == ["tiers"] and "tiers dropped" in queued.payload["text"]
    assert out["paused"] == [] and [(d["pilot"], d["arms"]) for d in out["dropped_arms"]] == [(key, ["tiers"])]
    pilot = client.get(f"/api/v1/pilots/{key}", headers=m).json
    assert pilot["state"] == "running"
    first, second = pilot["stages"][0], pilot["stages"][1]
    assert first["allocation"] == pytest.approx({"control": 0.34 / 0.67, "bonus": 0.33 / 0.67, "tiers": 0.0})
    assert first["allocation_log"][-1]["allocation"] == THREE  # the weights the assigned units joined under
    assert second["allocation"]["tiers"] == 0.0
    with app.app_context():
        event = db.session.scalar(select(AuditEvent).where(AuditEvent.entity_id == key,
                                                           AuditEvent.action == "auto_drop_arm"))
        assert event.after["arms"] == ["tiers"] and "spend_per_visit harmed in tiers" in event.after["reason"]

    # the plan puts tiers back into stage 2; applying the API run's recommendation takes it out again
    assert client.patch(f"/api/v1/pilots/{key}/stages/2", json={"allocation": THREE}, headers=m).status_code == 200
    applied = client.post(f"/api/v1/analyses/{run['id']}/apply", json={}, headers=m)
    assert applied.status_code == 200, applied.json
    assert (applied.json["current_stage"], applied.json["applied"]["drop_arms"]) == (2, ["tiers"])
    stage2 = client.get(f"/api/v1/pilots/{key}", headers=m).json["stages"][1]
    assert stage2["allocation"] == pytest.approx({"control": 0.34 / 0.67, "bonus": 0.33 / 0.67, "tiers": 0.0})
    bad = client.post(f"/api/v1/analyses/{run['id']}/apply", json={"action": {"type": "drop_arm", "arm": "control"}},
                      headers=m)
    assert bad.status_code in (409, 422)


def per_customer(app, key: str, arms: tuple[str, str]) -> pd.DataFrame:
    """Spend in the stage and in the 56 days before it, per assigned customer of the two arms, from the raw rows."""
    with app.app_context():
        pilot = get_pilot(db.session, key)
        start, conn = pilot.started_at, db.session.connection()
        a = pd.read_sql(text("SELECT customer_id, variant FROM assignments WHERE pilot_id = :p"), conn,
                        params={"p": pilot.id})
        t = pd.read_sql(text("SELECT customer_id, occurred_at, amount FROM transactions"), conn)
    t["occurred_at"] = pd.to_datetime(t["occurred_at"], utc=True, format="mixed")
    post = t[(t.occurred_at >= pd.Timestamp(start)) & (t.occurred_at < pd.Timestamp(NOW))]
    pre = t[(t.occurred_at >= pd.Timestamp(start - timedelta(days=56))) & (t.occurred_at < pd.Timestamp(start))]
    u = a[a.variant.isin(arms)].set_index("customer_id")
    u = u.join(post.groupby("customer_id").amount.sum().rename("spend"))
    return u.join(pre.groupby("customer_id").amount.sum().rename("pre_spend")).fillna(0.0)


def test_an_arm_clearly_worse_than_the_best_arm_is_dropped_by_a_test_against_it(app, client, auth):
    # tiers +1% visits: no harm, not clearly worse than control, but clearly behind bonus (+10%)
    key = plant_three(app, {"visits": 0.01}, "behind", customers=3000)
    run = client.post(f"/api/v1/pilots/{key}/analyses", json={"cutoff": NOW.isoformat()},
                      headers=auth("analyst")).json
    [vs] = run["results"]["versus_best"]
    assert (vs["arm"], vs["best"], vs["metric"]) == ("tiers", "bonus", "spend_per_customer")
    # CUPED with the best arm in control's place: θ pooled over both arms, Welch on the adjusted values
    u = per_customer(app, key, ("bonus", "tiers"))
    theta = np.cov(u.spend, u.pre_spend)[0, 1] / u.pre_spend.var()
    adj = u.spend - theta * (u.pre_spend - u.pre_spend.mean())
    cm = CompareMeans(DescrStatsW(adj[u.variant == "tiers"].to_numpy()), DescrStatsW(adj[u.variant == "bonus"].to_numpy()))
    _, p, _ = cm.ttest_ind(usevar="unequal")
    assert vs["effect_abs"] == pytest.approx(adj[u.variant == "tiers"].mean() - adj[u.variant == "bonus"].mean(),
                                             rel=1e-7)
    assert vs["p_value"] == pytest.approx(p, rel=1e-6) and vs["p_holm"] == vs["p_value"]  # one comparison
    assert verdicts(run) == {"bonus": "keep", "tiers": "drop_worse"}
    reason = run["recommendation"]["verdicts"][1]["reasons"][0]
    assert (reason["code"], reason["best"], reason["effect_rel"]) == ("worse_than_best", "bonus", vs["effect_rel"])
    assert run["recommendation"]["action"]["drop_arms"] == ["tiers"]
