"""Analysis runs: aggregates against pandas, results against statsmodels, planted truths, the API."""
from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats
from sqlalchemy import text
from statsmodels.stats.power import TTestIndPower
from statsmodels.stats.proportion import proportions_ztest
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from pilot.aggregation import customer_cube
from pilot.db import db
from pilot.models import AnalysisRun, Assignment, AuditEvent, Transaction
from pilot.rollout import get_pilot
from tests.factories import NOW, csrf, plant, run_analysis
from tests.stats_helpers import cr2_reference, gb_half_width, gb_p_value


def analyse(app, key: str) -> AnalysisRun:
    return run_analysis(app, key)


def add_refunds(app, key: str) -> int:
    """Refunds for every fifth customer, one after exposure and one in the pre-period: the simulation
    sends sales only, and a refund adds spend and items but is not a visit."""
    with app.app_context():
        pilot = get_pilot(db.session, key)
        rows = db.session.query(Assignment).filter_by(pilot_id=pilot.id).filter(Assignment.customer_id % 5 == 0).all()
        for i, row in enumerate(rows):
            for n, when in enumerate((row.assigned_at + timedelta(days=3, hours=i % 24),
                                      pilot.started_at - timedelta(days=10, hours=i % 24))):
                db.session.add(Transaction(source="test", event_id=f"refund-{key}-{i}-{n}", customer_id=row.customer_id,
                                           store_id=row.store_id or 1, occurred_at=when, type="refund",
                                           amount=-12.5 - i % 7, items=-1, batch_id=0, batch_row=i))
        db.session.commit()
        return len(rows)


def group_of(c: pd.DataFrame) -> np.ndarray:
    """The demo's saved customer groups (pilot.customer_groups), first match wins, in pandas."""
    young = c.age_band.isin(["18-24", "25-34", "35-44"]) & (c.children >= 1)
    return np.select([young, c.children >= 1, c.age_band == "65+", c.household_size == 1],
                     ["young_parents", "families", "seniors", "singles"], "other")


def raw_units(app, key: str, pre_days: int = 56) -> pd.DataFrame:
    """Per-customer values computed in pandas from the raw rows (the reference for the SQL)."""
    with app.app_context():
        conn = db.session.connection()
        pilot = get_pilot(db.session, key)
        start = pilot.started_at
        a = pd.read_sql(text("SELECT a.customer_id, a.variant, c.age_band, c.children, c.household_size "
                             "FROM assignments a JOIN customers c ON c.id = a.customer_id WHERE a.pilot_id = :p"),
                        conn, params={"p": pilot.id})
        t = pd.read_sql(text("SELECT customer_id, occurred_at, amount, items, type, discount_cost FROM transactions"),
                        conn)
    t["occurred_at"] = pd.to_datetime(t["occurred_at"], utc=True, format="mixed")
    a["grp"] = group_of(a)
    post = t[(t.occurred_at >= pd.Timestamp(start)) & (t.occurred_at < pd.Timestamp(NOW))]
    pre = t[(t.occurred_at >= pd.Timestamp(start - timedelta(days=pre_days))) & (t.occurred_at < pd.Timestamp(start))]
    mid = pd.Timestamp(start + (NOW - start) / 2)

    def per(frame: pd.DataFrame, prefix: str = "") -> pd.DataFrame:
        sales = frame[frame.type == "sale"]
        return pd.DataFrame({f"{prefix}spend": frame.groupby("customer_id").amount.sum(),
                             f"{prefix}visits": sales.groupby("customer_id").size(),
                             f"{prefix}items": frame.groupby("customer_id")["items"].sum()})
    u = a.set_index("customer_id").join(per(post)).join(per(pre, "pre_"))
    early = post[(post.type == "sale") & (post.occurred_at < mid)].groupby("customer_id").size()
    late = post[(post.type == "sale") & (post.occurred_at >= mid)].groupby("customer_id").size()
    u = u.join(early.rename("early")).join(late.rename("late")).fillna(0.0)
    u["converted"] = (u.visits > 0).astype(float)
    u["retained"] = ((u.early > 0) & (u.late > 0)).astype(float)
    return u


def test_aggregates_equal_pandas_on_the_raw_rows(app):
    key = plant(app, "clear_win", customers=800, stores=12, key="agg")
    assert add_refunds(app, key) > 100
    u = raw_units(app, key)
    with app.app_context():
        pilot = get_pilot(db.session, key)
        cube = customer_cube(db.session, pilot, pilot.stage(1), NOW)
    assert {k for k in cube.by_group} == {(v, g) for v, g in zip(u.variant, u.grp)}
    for (variant, grp), sums in cube.by_group.items():
        part = u[(u.variant == variant) & (u.grp == grp)]
        assert sums["n"] == len(part)
        for col in ("spend", "visits", "items", "converted", "retained", "pre_spend", "pre_visits"):
            assert sums[col] == pytest.approx(part[col].sum(), rel=1e-9, abs=1e-6), (variant, grp, col)
        for a, b in (("spend", "spend"), ("spend", "pre_spend"), ("visits", "pre_visits"), ("spend", "visits"),
                     ("spend", "pre_visits"), ("visits", "pre_spend")):
            assert sums[f"{a}*{b}"] == pytest.approx((part[a] * part[b]).sum(), rel=1e-9), (variant, grp, a, b)
    # everyone counts: non-buyers are zeros, not missing rows
    assert sum(s["n"] for s in cube.by_group.values()) == len(u) and (u.spend == 0).any()


@pytest.mark.parametrize("weekly,merge", [("spend", False), ("visits", True)])
def test_weekly_store_and_exposure_aggregates_equal_pandas(app, weekly, merge, monkeypatch):
    """`merge`: on PostgreSQL the unit rows merge-join (as when the units are most of the customers)."""
    key = plant(app, "clear_win", customers=600, stores=10, key=f"wk{weekly}")
    add_refunds(app, key)
    with app.app_context():
        pilot = get_pilot(db.session, key)
        # exposures spread over two weeks and the clock (sales fall 20:00-09:00), so units differ in
        # their full weeks and sales fall on both sides of week boundaries
        for row in db.session.query(Assignment).filter_by(pilot_id=pilot.id):
            row.assigned_at += timedelta(days=row.customer_id % 15, hours=row.customer_id * 5 % 24)
        db.session.commit()
        conn = db.session.connection()
        a = pd.read_sql(text("SELECT a.customer_id, a.variant, a.assigned_at, coalesce(a.store_id, c.home_store_id) "
                             "AS store_id FROM assignments a JOIN customers c ON c.id = a.customer_id "
                             "WHERE a.pilot_id = :p"), conn, params={"p": pilot.id})
        t = pd.read_sql(text("SELECT customer_id, occurred_at, amount, type FROM transactions"), conn)
        assert (t.type == "refund").sum() > 100
        pg = conn.dialect.name == "postgresql"
        if pg:
            conn.execute(text("ANALYZE customers"))  # the estimate of the customers the choice reads
            monkeypatch.setattr("pilot.aggregation.MERGE_SHARE", 0.0 if merge else 1e9)
        cube = customer_cube(db.session, pilot, pilot.stage(1), NOW, weekly=weekly)
        assert cube.joins == ("merge" if merge and pg else "hash")
        if pg:  # the cube's planner settings do not outlive it
            for setting in ("enable_nestloop", "enable_hashagg", "enable_hashjoin"):
                assert conn.scalar(text(f"SELECT current_setting('{setting}')")) == "on"
    a["assigned_at"] = pd.to_datetime(a["assigned_at"], utc=True, format="mixed")
    t["occurred_at"] = pd.to_datetime(t["occurred_at"], utc=True, format="mixed")
    week = pd.Timedelta(days=7)
    a["full_weeks"] = (pd.Timestamp(NOW) - a.assigned_at) // week
    assert a.full_weeks.nunique() > 1
    j = t.merge(a, on="customer_id")
    post = j[(j.occurred_at >= j.assigned_at) & (j.occurred_at < pd.Timestamp(NOW))].copy()
    post["week"] = (post.occurred_at - post.assigned_at) // week
    post["value"] = post.amount if weekly == "spend" else (post.type == "sale").astype(float)
    per = post.groupby(["customer_id", "week"]).value.sum().rename("x").reset_index().merge(a, on="customer_id")
    per = per[per.full_weeks > per.week]
    expected = {(v, int(w)): (g.x.sum(), (g.x ** 2).sum()) for (v, w), g in per.groupby(["variant", "week"])}
    assert set(cube.by_week) == set(expected) and len(expected) >= 6
    for k, (total, squares) in expected.items():
        assert cube.by_week[k][weekly] == pytest.approx(total, rel=1e-9), k
        assert cube.by_week[k][f"{weekly}*{weekly}"] == pytest.approx(squares, rel=1e-9), k
    assert cube.full_weeks == {(v, int(f)): len(g) for (v, f), g in a.groupby(["variant", "full_weeks"])}
    spend = post.groupby("customer_id").amount.sum()
    a["spend"] = a.customer_id.map(spend).fillna(0.0)
    for (v, store), g in a.groupby(["variant", "store_id"]):
        assert cube.by_store[(v, store)]["n"] == len(g)
        assert cube.by_store[(v, store)]["spend"] == pytest.approx(g.spend.sum(), rel=1e-9, abs=1e-9)


def test_results_equal_statsmodels_on_the_raw_rows(app):
    key = plant(app, "clear_win", customers=1500, stores=12, key="sm")
    run = analyse(app, key)
    u = raw_units(app, key)
    c, t = u[u.variant == "control"], u[u.variant == "bonus"]
    rows = {r["metric"]: r for r in run.results["metrics"]}
    # CUPED spend: θ on the pooled sample, then Welch on the adjusted values
    pooled = pd.concat([c, t])
    theta = np.cov(pooled.spend, pooled.pre_spend)[0, 1] / pooled.pre_spend.var()
    adj = lambda f: f.spend - theta * (f.pre_spend - pooled.pre_spend.mean())  # noqa: E731
    cm = CompareMeans(DescrStatsW(adj(t).to_numpy()), DescrStatsW(adj(c).to_numpy()))
    stat, p, _ = cm.ttest_ind(usevar="unequal")
    r = rows["spend_per_customer"]
    assert r["method"] == "cuped"
    assert r["effect_abs"] == pytest.approx(adj(t).mean() - adj(c).mean(), rel=1e-7)
    assert r["p_value"] == pytest.approx(p, rel=1e-6)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx(cm.tconfint_diff(usevar="unequal"), rel=1e-6)
    # power is planned for the CUPED test: the control's sd times √(1 − the variance reduction), into
    # statsmodels' t-test power for the arms' sizes
    reduction = 1 - (adj(c).var() / len(c) + adj(t).var() / len(t)) / (c.spend.var() / len(c) + t.spend.var() / len(t))
    assert 0.1 < reduction < 1
    d = TTestIndPower().solve_power(nobs1=len(c), ratio=len(t) / len(c), alpha=run.config["alpha"],
                                    power=run.config["power"])
    power = run.results["power"]["bonus"]
    assert power["variance_reduction"] == pytest.approx(reduction, rel=1e-7)
    assert power["mde_abs_now"] == pytest.approx(d * c.spend.std() * np.sqrt(1 - reduction), rel=1e-5)
    # conversion: pooled z-test p-value
    z, pz = proportions_ztest([t.converted.sum(), c.converted.sum()], [len(t), len(c)])
    assert rows["conversion"]["p_value"] == pytest.approx(pz, rel=1e-6)
    # spend per visit with the pre-period ratio as covariate: linearise per unit, then a z-test
    def lin(f: pd.DataFrame, y: str, n: str) -> pd.Series:
        r_ = f[y].sum() / f[n].sum()
        return (f[y] - r_ * f[n]) / f[n].mean()
    uc, ut = lin(c, "spend", "visits"), lin(t, "spend", "visits")
    vc, vt = lin(c, "pre_spend", "pre_visits"), lin(t, "pre_spend", "pre_visits")
    th = (np.cov(uc, vc)[0, 1] / len(c) + np.cov(ut, vt)[0, 1] / len(t)) / (vc.var() / len(c) + vt.var() / len(t))
    se = np.sqrt(((uc - th * vc).var()) / len(c) + ((ut - th * vt).var()) / len(t))
    effect = (t.spend.sum() / t.visits.sum() - c.spend.sum() / c.visits.sum()) - th * (
        t.pre_spend.sum() / t.pre_visits.sum() - c.pre_spend.sum() / c.pre_visits.sum())
    rs = rows["spend_per_visit"]
    assert rs["method"] == "ratio_cuped"
    assert rs["effect_abs"] == pytest.approx(effect, rel=1e-6) and rs["se"] == pytest.approx(se, rel=1e-6)
    # relative to the control's ratio, delta method on the linearised rows: Var(R_c), Cov(effect, R_c)
    base = c.spend.sum() / c.visits.sum()
    var_base = uc.var() / len(c)
    cov_base = -var_base + th * np.cov(uc, vc)[0, 1] / len(c)
    se_rel = np.sqrt(se**2 / base**2 + effect**2 * var_base / base**4 - 2 * effect * cov_base / base**3)
    assert rs["effect_rel"] == pytest.approx(effect / base, rel=1e-6)
    assert rs["se_rel"] == pytest.approx(se_rel, rel=1e-6)
    # always-valid intervals (tuning 5,000 units): of the effect with its error, and of the relative
    # effect with the relative effect's own (delta-method) error
    n = len(c) + len(t)
    assert rs["seq_ci_low"] == pytest.approx(effect - gb_half_width(se, n, 0.05, 5000), rel=1e-6)
    assert rs["seq_ci_rel_high"] == pytest.approx(effect / base + gb_half_width(se_rel, n, 0.05, 5000), rel=1e-6)
    assert rs["seq_p_value"] == pytest.approx(gb_p_value(effect, se, n, 0.05, 5000), rel=1e-5)
    # economics from the same numbers
    econ = run.results["economics"]["bonus"]
    with app.app_context():
        sales = pd.read_sql(text("SELECT customer_id, amount FROM transactions WHERE type = 'sale' AND occurred_at >= "
                                 ":s AND occurred_at < :e"), db.session.connection(),
                            params={"s": get_pilot(db.session, key).started_at, "e": NOW})
    cost = sales[sales.customer_id.isin(t.index)].amount.sum() * 0.015 / len(t)  # 1 point × 0.02 × (1 − 0.25)
    assert econ["cost_per_customer"] == pytest.approx(cost, rel=1e-6)
    assert econ["net_profit_per_customer"] == pytest.approx(r["effect_abs"] * 0.28 - cost, rel=1e-6)


@pytest.mark.parametrize("scenario,decision", [
    ("clear_win", "advance"), ("tiered_groups", "adjust"), ("discount_loses_money", "adjust"),
    ("harmed_guardrail", "stop"), ("srm", "investigate"), ("too_few", "extend")])
def test_the_recommendation_finds_the_planted_truth(app, scenario, decision):
    key = plant(app, scenario)
    run = analyse(app, key)
    rec = run.recommendation
    assert rec["decision"] == decision, rec
    codes = [r["code"] for r in rec["reasons"]]
    if scenario == "tiered_groups":
        assert rec["action"]["type"] == "narrow_groups"
        assert "young_parents" in rec["action"]["groups"] and "singles" not in rec["action"]["groups"]
    elif scenario == "discount_loses_money":
        reason = rec["reasons"][0]
        assert reason["code"] == "uplift_but_unprofitable" and reason["roi"] < 0
        econ = run.results["economics"]["discount10"]
        spend = next(r for r in run.results["metrics"] if r["metric"] == "spend_per_customer")
        assert reason["break_even_discount_rate"] == pytest.approx(spend["effect_abs"] * 0.28 /
                                                                   spend["mean_treatment"], rel=1e-9)
        assert 0 < reason["break_even_discount_rate"] < 0.10 and econ["roi"] < 0
    elif scenario == "harmed_guardrail":
        assert codes == ["guardrail_harmed"] and rec["reasons"][0]["metric"] == "spend_per_visit"
    elif scenario == "srm":
        assert "sample_ratio_mismatch" in codes
    elif scenario == "too_few":
        # every eligible customer is assigned at the start: no more units can come (issue #22)
        assert codes == ["underpowered"] and rec["reasons"][0]["more_units_needed"] == 0
        assert run.results["power"]["bonus"]["pool_exhausted"]
    elif scenario == "clear_win":
        assert codes == ["gate_met"] and rec["reasons"][0]["roi"] > 0
        assert rec["reasons"][0]["projected_net_profit"] > 0


def test_same_data_same_numbers(app):
    key = plant(app, "clear_win", customers=500, stores=8, key="again")
    first, second = analyse(app, key), analyse(app, key)
    assert first.results == second.results and first.recommendation == second.recommendation


def test_analysis_api_run_list_show_apply(app, client, auth):
    key = plant(app, "clear_win")
    app.config["GATE_FRESHNESS_HOURS"] = 24 * 365  # the simulated retailer's data ends at NOW (the gate's freshness)
    r = client.post(f"/api/v1/pilots/{key}/analyses", json={"cutoff": NOW.isoformat()}, headers=auth("analyst"))
    assert r.status_code == 201, r.json
    run = r.json
    assert run["decision"] == "advance" and run["status"] == "done" and run["results"]["metrics"]
    assert run["config"]["primary_metric"] == "spend_per_customer" and run["timings"]["total_s"] > 0
    listed = client.get(f"/api/v1/pilots/{key}/analyses", headers=auth("manager")).json["items"]
    assert [x["id"] for x in listed] == [run["id"]]
    assert client.get(f"/api/v1/analyses/{run['id']}", headers=auth("analyst")).json["recommendation"] == \
        run["recommendation"]
    assert client.post(f"/api/v1/analyses/{run['id']}/apply", json={}, headers=auth("analyst")).status_code == 403
    applied = client.post(f"/api/v1/analyses/{run['id']}/apply", json={}, headers=auth("manager"))
    assert applied.status_code == 200, applied.json
    assert applied.json["current_stage"] == 2 and applied.json["state"] == "running"
    again = client.post(f"/api/v1/analyses/{run['id']}/apply", json={}, headers=auth("manager"))
    assert again.status_code == 409 and again.json["error"]["code"] == "stale_run"
    with app.app_context():
        actions = [e.action for e in db.session.query(AuditEvent).filter_by(entity_id=key)]
    assert "apply_recommendation" in actions and "advance" in actions
    assert client.get("/api/v1/analyses/99999", headers=auth("analyst")).status_code == 404
    assert client.post("/api/v1/pilots/nope/analyses", json={}, headers=auth("analyst")).status_code == 404


def test_apply_narrows_groups(app, client, auth):
    key = plant(app, "tiered_groups")
    run = client.post(f"/api/v1/pilots/{key}/analyses", json={"cutoff": NOW.isoformat()}, headers=auth("manager")).json
    assert run["recommendation"]["action"]["type"] == "narrow_groups"
    r = client.post(f"/api/v1/analyses/{run['id']}/apply", json={}, headers=auth("manager"))
    assert r.status_code == 200, r.json
    pilot = client.get(f"/api/v1/pilots/{key}", headers=auth("manager")).json
    assert pilot["stages"][0]["eligible_groups"] == run["recommendation"]["action"]["groups"]


def test_background_run_is_polled(app, client, auth):
    key = plant(app, "too_few")
    r = client.post(f"/api/v1/pilots/{key}/analyses", json={"background": True, "cutoff": NOW.isoformat()},
                    headers=auth("analyst"))
    assert r.status_code == 202 and r.json["status"] in ("queued", "running", "done")
    import time
    for _ in range(100):
        shown = client.get(f"/api/v1/analyses/{r.json['id']}", headers=auth("analyst")).json
        if shown["status"] in ("done", "failed"):
            break
        time.sleep(0.1)
    assert shown["status"] == "done" and shown["decision"] == "extend", shown.get("error")


COST_VARIANTS = [
    {"key": "control", "name": "No programme", "mechanic": "control"},
    {"key": "tiers", "name": "Weekly tiers", "mechanic": "tiered", "parameters": {"period_days": 7, "tiers": [
        {"name": "silver", "threshold": 0, "discount_rate": 0.01}, {"name": "gold", "threshold": 40, "discount_rate": 0.03},
        {"name": "platinum", "threshold": 90, "discount_rate": 0.05}]}},
    {"key": "bands", "name": "Bigger basket, bigger discount", "mechanic": "progressive_discount",
     "parameters": {"bands": [{"min_spend": 20, "rate": 0.02}, {"min_spend": 50, "rate": 0.06}]}},
    {"key": "lottery", "name": "Prize draw", "mechanic": "gifts_lottery",
     "parameters": {"condition": "a basket of 30 or more", "min_spend": 30, "prize_value": 40, "win_probability": 0.02}},
    {"key": "club", "name": "Club", "mechanic": "club_membership",
     "parameters": {"benefits": ["free parking"], "discount_rate": 0.04, "fee": 1.5, "cost_per_member_per_period": 4.0,
                    "period_days": 30}},
    {"key": "bonus", "name": "Bonus points", "mechanic": "cumulative_bonus",
     "parameters": {"points_per_unit": 1, "point_value": 0.02, "expiry_days": 365, "breakage": 0.25}}]


def test_modelled_cost_equals_the_mechanics_on_the_raw_rows(app):
    """The programme cost in the cube (SQL) equals pilot.mechanics applied row by row in Python: the
    feed's cost where sent, else each mechanic's model (tiers by the spend of the current period,
    refunds included), plus the member-period cost pro rata over the exposure."""
    from pilot.mechanics import member_period_cost, transaction_cost
    key = plant(app, "clear_win", key="cost", customers=700, stores=10, effects={}, variants=COST_VARIANTS,
                allocation={v["key"]: 1 / 6 for v in COST_VARIANTS})
    add_refunds(app, key)
    with app.app_context():
        pilot = get_pilot(db.session, key)
        # the feed sends its own cost for every seventh sale
        db.session.execute(text("UPDATE transactions SET discount_cost = 1.25 WHERE id % 7 = 0"))
        db.session.commit()
        conn = db.session.connection()
        a = pd.read_sql(text("SELECT a.customer_id, a.variant, a.assigned_at, c.age_band, c.children, "
                             "c.household_size FROM assignments a JOIN customers c ON c.id = a.customer_id "
                             "WHERE a.pilot_id = :p"), conn, params={"p": pilot.id})
        t = pd.read_sql(text("SELECT id, customer_id, occurred_at, amount, discount_cost FROM transactions"), conn)
        params = {v.key: (v.mechanic, v.parameters or {}) for v in pilot.programme.variants}
        cube = customer_cube(db.session, pilot, pilot.stage(1), NOW)
    a["assigned_at"] = pd.to_datetime(a["assigned_at"], utc=True, format="mixed")
    t["occurred_at"] = pd.to_datetime(t["occurred_at"], utc=True, format="mixed")
    t["amount"] = t.amount.astype(float)
    a["grp"] = group_of(a)
    j = t.merge(a, on="customer_id")
    j = j[(j.occurred_at >= j.assigned_at) & (j.occurred_at < pd.Timestamp(NOW))].sort_values(["occurred_at", "id"])
    period_days = params["tiers"][1]["period_days"]
    j["period"] = (j.occurred_at - j.assigned_at) // pd.Timedelta(days=period_days)
    j["before"] = j.groupby(["customer_id", "period"]).amount.cumsum() - j.amount
    assert j[j.variant == "tiers"].period.nunique() >= 4  # the tiers restart several times in the window
    j["cost"] = [float(fed) if fed == fed and fed is not None else
                 transaction_cost(*params[v], amount, before if v == "tiers" else 0.0)
                 for v, amount, before, fed in zip(j.variant, j.amount, j.before, j.discount_cost)]
    u = a.set_index("customer_id").join(j.groupby("customer_id").cost.sum()).fillna({"cost": 0.0})
    exposed = (pd.Timestamp(NOW) - u.assigned_at).dt.total_seconds()
    for k, (mechanic, p) in params.items():
        if "cost_per_member_per_period" in p:
            mine = u.variant == k
            u.loc[mine, "cost"] += member_period_cost(mechanic, p) * exposed[mine] / (p["period_days"] * 86400)
    # every cost path has rows: the feed's, each model, the tier reached (gold and platinum too), members
    assert (j.discount_cost.notna()).sum() > 100 and (j.discount_cost.isna()).sum() > 1000
    tiered = j[(j.variant == "tiers") & j.discount_cost.isna() & (j.amount > 0)]
    assert (tiered.before >= 90).sum() > 20 and ((tiered.before >= 40) & (tiered.before < 90)).sum() > 20
    for (variant, grp), sums in cube.by_group.items():
        part = u[(u.variant == variant) & (u.grp == grp)]
        assert sums["cost"] == pytest.approx(part.cost.sum(), rel=1e-9, abs=1e-6), (variant, grp)
        assert sums["cost*cost"] == pytest.approx((part.cost ** 2).sum(), rel=1e-9, abs=1e-6), (variant, grp)
    assert {v for v, _ in cube.by_group} == set(params)


def stats_welch(part: pd.DataFrame, col: str) -> tuple[float, float]:
    """Bonus minus control mean of a column and its Welch error, by statsmodels."""
    cm = CompareMeans(DescrStatsW(part[col][part.variant == "bonus"].to_numpy()),
                      DescrStatsW(part[col][part.variant == "control"].to_numpy()))
    return cm.d1.mean - cm.d2.mean, cm.std_meandiff_separatevar


def test_a_mid_stage_ramp_is_compared_period_by_period(app, client, tokens):
    """Weights moved from 80/20 to 20/80 ten days into the stage, with no true effect: the early units
    had longer to spend, so the pooled arms differ a lot; the run compares period by period and the
    numbers equal CUPED per period (θ within the period) combined by units, computed in pandas."""
    key = plant(app, "clear_win", key="ramp", customers=3000, stores=12, effects={})
    rng = np.random.default_rng(7)
    with app.app_context():
        pilot = get_pilot(db.session, key)
        stage, start = pilot.stage(1), pilot.started_at
        change = start + timedelta(days=10)
        for row in db.session.query(Assignment).filter_by(pilot_id=pilot.id).order_by(Assignment.customer_id):
            early = row.customer_id % 2 == 0
            row.assigned_at = start + timedelta(days=(0 if early else 10) + row.customer_id % 10,
                                                hours=row.customer_id % 24)
            row.variant = "control" if rng.random() < (0.8 if early else 0.2) else "bonus"
        stage.allocation_log = [{"until": change.isoformat(), "allocation": {"control": 0.8, "bonus": 0.2}}]
        stage.allocation = {"control": 0.2, "bonus": 0.8}
        db.session.commit()
        conn = db.session.connection()
        a = pd.read_sql(text("SELECT customer_id, variant, assigned_at FROM assignments WHERE pilot_id = :p"), conn,
                        params={"p": pilot.id})
        t = pd.read_sql(text("SELECT customer_id, occurred_at, amount FROM transactions"), conn)
    run = analyse(app, key)
    a["assigned_at"] = pd.to_datetime(a["assigned_at"], utc=True, format="mixed")
    t["occurred_at"] = pd.to_datetime(t["occurred_at"], utc=True, format="mixed")
    t["amount"] = t.amount.astype(float)
    j = t.merge(a, on="customer_id")
    post = j[(j.occurred_at >= j.assigned_at) & (j.occurred_at < pd.Timestamp(NOW))]
    pre = j[(j.occurred_at >= pd.Timestamp(start - timedelta(days=56))) & (j.occurred_at < pd.Timestamp(start))]
    u = a.set_index("customer_id").join(post.groupby("customer_id").amount.sum().rename("spend")) \
        .join(pre.groupby("customer_id").amount.sum().rename("pre_spend")).fillna({"spend": 0.0, "pre_spend": 0.0})
    u["period"] = (u.assigned_at >= pd.Timestamp(change)).astype(int)
    assert run.results["allocation_periods"]["post_stratified"]
    assert run.results["allocation_periods"]["units"] == {
        str(p): {v: int(((u.period == p) & (u.variant == v)).sum()) for v in ("control", "bonus")} for p in (0, 1)}
    assert not run.results["srm"]["mismatch"]  # a ramp is no sample-ratio mismatch
    # the pooled comparison is badly biased: the control arm is early-heavy
    pooled = CompareMeans(DescrStatsW(u.spend[u.variant == "bonus"].to_numpy()),
                          DescrStatsW(u.spend[u.variant == "control"].to_numpy()))
    assert pooled.ttest_ind(usevar="unequal")[1] < 1e-6
    effects, ses, weights = [], [], []
    for _, part in u.groupby("period"):
        theta = np.cov(part.spend, part.pre_spend)[0, 1] / part.pre_spend.var()
        adj = part.spend - theta * (part.pre_spend - part.pre_spend.mean())
        c, tr = adj[part.variant == "control"], adj[part.variant == "bonus"]
        cm = CompareMeans(DescrStatsW(tr.to_numpy()), DescrStatsW(c.to_numpy()))
        effects.append(tr.mean() - c.mean())
        ses.append(cm.std_meandiff_separatevar)
        weights.append(len(part) / len(u))
    r = next(r for r in run.results["metrics"] if r["metric"] == "spend_per_customer" and r["arm"] == "bonus")
    assert r["method"] == "cuped+post_stratified" and r["strata"] == 2
    assert r["effect_abs"] == pytest.approx(np.dot(weights, effects), rel=1e-7)
    assert r["se"] == pytest.approx(np.sqrt(np.dot(np.square(weights), np.square(ses))), rel=1e-7)
    assert r["ci_low"] < 0 < r["ci_high"] and r["p_value"] > 0.05  # no true effect
    assert all(m["method"].endswith("post_stratified") for m in run.results["metrics"])
    # customer groups too: each group's arms compared period by period
    with app.app_context():
        groups = pd.read_sql(text("SELECT id AS customer_id, age_band, children, household_size FROM customers"),
                             db.session.connection()).set_index("customer_id")
    g = groups.reindex(u.index)
    u["grp"] = group_of(g)
    by_group = {r["group"]: r for r in run.results["groups"] if r["arm"] == "bonus"}
    assert set(by_group) == set(u.grp) and all(r["method"] == "cuped+post_stratified" for r in by_group.values())
    fam = u[u.grp == "families"]
    parts = [part for _, part in fam.groupby("period")]
    deltas = []
    for part in parts:
        theta = np.cov(part.spend, part.pre_spend)[0, 1] / part.pre_spend.var()
        adj = part.spend - theta * (part.pre_spend - part.pre_spend.mean())
        deltas.append(adj[part.variant == "bonus"].mean() - adj[part.variant == "control"].mean())
    assert by_group["families"]["effect_abs"] == pytest.approx(
        np.dot([len(p) / len(fam) for p in parts], deltas), rel=1e-7)
    # the report says so
    client.post("/login", data={"token": tokens["analyst"], "csrf_token": csrf(client)})
    page = client.get(f"/analyses/{run.id}").get_data(as_text=True)
    assert "within each of the 2 allocation periods" in page and "post-stratified" in page
    # weeks since exposure: each week's units (exposed the whole week) compared period by period
    week = pd.Timedelta(days=7)
    u["full_weeks"] = (pd.Timestamp(NOW) - u.assigned_at) // week
    first_week = post[(post.occurred_at - post.assigned_at) < week].groupby("customer_id").amount.sum()
    u["w0"] = first_week.reindex(u.index).fillna(0.0)
    whole = u[u.full_weeks >= 1]
    parts = [part for _, part in whole.groupby("period")]
    deltas = [stats_welch(part, "w0") for part in parts]
    w1 = next(r for r in run.results["weeks"] if r["arm"] == "bonus" and r["week"] == 1)
    assert w1["method"] == "welch+post_stratified"
    assert w1["effect_abs"] == pytest.approx(np.dot([len(p) / len(whole) for p in parts], [d[0] for d in deltas]),
                                             rel=1e-7)
    assert w1["se"] == pytest.approx(np.sqrt(np.dot([(len(p) / len(whole)) ** 2 for p in parts],
                                                    [d[1] ** 2 for d in deltas])), rel=1e-7)
    # economics from the same comparison: the uplift and the programme cost per customer, period by period
    econ = run.results["economics"]["bonus"]
    assert econ["incremental_revenue_per_customer"] == pytest.approx(r["effect_abs"], rel=1e-12)
    with app.app_context():
        sales = pd.read_sql(text("SELECT customer_id, occurred_at, amount FROM transactions WHERE type = 'sale'"),
                            db.session.connection())
    sales["occurred_at"] = pd.to_datetime(sales["occurred_at"], utc=True, format="mixed")
    sales = sales.merge(a, on="customer_id")
    sales = sales[(sales.occurred_at >= sales.assigned_at) & (sales.occurred_at < pd.Timestamp(NOW))]
    u["cost"] = (sales[sales.variant == "bonus"].groupby("customer_id").amount.sum().astype(float) * 0.015) \
        .reindex(u.index).fillna(0.0)  # bonus: 1 point × 0.02 × (1 − 0.25) per unit spent; control: nothing
    gaps = [part.cost[part.variant == "bonus"].mean() - part.cost[part.variant == "control"].mean()
            for _, part in u.groupby("period")]
    assert econ["cost_per_customer"] == pytest.approx(np.dot(weights, gaps), rel=1e-7)
    # the store-clustered check: the interacted regression on centred period indicators, clustered by store
    with app.app_context():
        stores = pd.read_sql(text("SELECT a.customer_id, COALESCE(a.store_id, c.home_store_id) AS store FROM "
                                  "assignments a JOIN customers c ON c.id = a.customer_id WHERE a.pilot_id = :p"),
                             db.session.connection(), params={"p": pilot.id}).set_index("customer_id")
    u["store"] = stores.store.reindex(u.index)
    u["treated"] = (u.variant == "bonus").astype(float)
    u["d1"] = u.period - u.period.mean()
    fit = smf.ols("spend ~ treated * d1", u).fit(cov_type="cluster", cov_kwds={"groups": u.store}, use_t=True)
    check = run.results["cluster_robust"]["bonus"]
    assert check["method"] == "cluster_robust+post_stratified"
    assert check["effect_abs"] == pytest.approx(fit.params["treated"], rel=1e-7)
    contrast = np.array([name == "treated" for name in fit.model.exog_names], dtype=float)
    _, se, df_bm = cr2_reference(fit.model.exog, u.spend.to_numpy(), list(u.store), contrast)  # CR2, BM df
    assert check["se"] == pytest.approx(se, rel=1e-7) and check["df"] == pytest.approx(df_bm, rel=1e-7)
    assert check["p_value"] == pytest.approx(2 * stats.t.sf(abs(check["effect_abs"] / se), df_bm), rel=1e-6)
