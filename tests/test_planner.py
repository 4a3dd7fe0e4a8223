"""The planner (pilot.planner): analytic power against power simulated by running the real analysis on
synthetic pilots from the same history, store pilots' simulated MDE against an independent
simulation of the decision test, the endpoints, and honest planning once the eligible pool is assigned."""
from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from experiments.cluster import ancova_cr2
from experiments.cuped import cuped
from experiments.randomisation import ancova_randomisation
from experiments.results import InferenceConfig
from experiments.statistics import RegressionAdjustedStatistic
from pilot import planner
from pilot.auth import CLI
from pilot.db import db
from pilot.models import Store
from pilot.programmes import create_programme
from pilot.simulate import BONUS, CONTROL
from pilot.store_power import StoreHistory, simulate
from pilot.synthetic import REGIONS, create_retailer
from pilot.synthetic_history import customers_of, draw, insert_history

END = datetime(2026, 6, 1, tzinfo=UTC)
WEEKS = 4


def _retailer(app, stores: int, customers: int, weeks: int, seed: int, end: datetime = END, **kw):
    """A synthetic retailer with `weeks` of numpy-drawn history before `end`; returns what was drawn."""
    with app.app_context():
        create_retailer(db.session, random.Random(seed), stores, customers)
        create_programme(db.session, CLI.actor, {"key": "loyalty", "name": "Loyalty", "variants": [CONTROL, BONUS]})
        ids = [s.id for s in db.session.query(Store).order_by(Store.id)]
        who, homes = customers_of(db.session, ids)
        drawn = draw(who, homes, np.array(ids), weeks, end, np.random.default_rng(seed), **kw)
        insert_history(db.session, drawn)
        db.session.commit()
    return drawn


def _body(**over):
    body = {"programme": "loyalty", "unit": "customer", "primary_metric": "spend_per_customer", "alpha": 0.05,
            "power": 0.8, "mde": 0.03, "start": END, "weeks": WEEKS, "simulations": 0,
            "stages": [{"region_codes": [c for c, _ in REGIONS], "allocation": {"control": 0.5, "bonus": 0.5}}]}
    return {**body, **over}


def _cohort(drawn, weeks: int, active_weeks: int = 8, pre_days: int = 56):
    """The test's own reading of its draw: per customer active before the window, (window, pre-period) spend."""
    ago = drawn.occurred_at / 86400  # days before END
    s = weeks * 7
    active = np.unique(drawn.customer_id[(ago > s) & (ago <= s + 7 * active_weeks)])
    unit = np.searchsorted(active, drawn.customer_id)
    known = (unit < len(active)) & (active[np.minimum(unit, len(active) - 1)] == drawn.customer_id)
    window, pre = known & (ago <= s), known & (ago > s) & (ago <= s + pre_days)
    y = np.bincount(unit[window], weights=drawn.amount[window], minlength=len(active))
    x = np.bincount(unit[pre], weights=drawn.amount[pre], minlength=len(active))
    return y, x


def _stat(y, x):
    return RegressionAdjustedStatistic(len(y), y.sum(), y @ y, x.sum(), x @ x, x @ y)


def test_analytic_power_agrees_with_the_real_analysis_on_synthetic_pilots_from_the_history(app):
    drawn = _retailer(app, stores=10, customers=3000, weeks=20, seed=5)
    y, x = _cohort(drawn, WEEKS)
    rng = np.random.default_rng(17)
    with app.app_context():
        for target in (0.2, 0.5, 0.8):
            plan = planner.plan_config(db.session, _body(power=target))
            mde = plan["analytic"]["mde_rel"]
            hits = 0
            runs = 1200
            for _ in range(runs):
                t = rng.random(len(y)) < 0.5
                r = cuped(_stat(y[~t], x[~t]), _stat(y[t] * (1 + mde), x[t])).effect
                hits += r.p_value < 0.05 and r.effect_abs > 0
            print("customer", target, mde, hits / runs)
            assert abs(hits / runs - target) <= 0.03, (target, mde, hits / runs)
        plan = planner.plan_config(db.session, _body(simulations=300, mde=mde))
    assert abs(plan["simulated"]["power"] - plan["analytic"]["power"]) <= 0.07
    assert plan["eligible"]["customers"] == pytest.approx(len(y), rel=0.05)
    assert plan["baseline"]["cuped_variance_reduction"] > 0.1
    assert [p["weeks"] for p in plan["power_curve"]] == list(range(1, 17))
    mdes = [p["mde_rel"] for p in plan["power_curve"]]
    assert all(a > b for a, b in zip(mdes, mdes[1:]))  # the same customers, longer: the MDE falls
    assert plan["assumptions"] and plan["analytic"]["assumptions"]["units"] == plan["eligible"]["customers"]


def _stores(n: int, weeks: int, seed: int) -> StoreHistory:
    """Weekly sales of n stores in five regions: a level per store and a weekly random walk."""
    rng = np.random.default_rng(seed)
    level = rng.lognormal(np.log(30000), 0.4, n)
    weekly = level[:, None] * np.exp(np.cumsum(rng.normal(0, 0.03, (n, weeks)), axis=1)
                                     + rng.normal(0, 0.05, (n, weeks)))
    return StoreHistory([f"S{i:03d}" for i in range(n)], [f"r{i % 5}" for i in range(n)], weekly)


def _independent_power(h: StoreHistory, delta: float, weeks: int, runs: int, seed: int) -> float:
    """The test's own simulation: its own pairing (within region by the 8 weeks' sales before the window,
    the odd store out free), a relative lift, CR2 ANCOVA and the randomisation test over the same scheme."""
    rng = np.random.default_rng(seed)
    hits = 0
    w = h.weekly.shape[1]
    config = InferenceConfig()
    for r in range(runs):
        end = w - r % (w - 2 * weeks + 1)
        post = h.weekly[:, end - weeks:end].sum(axis=1)
        pre = h.weekly[:, end - 2 * weeks:end - weeks].sum(axis=1)
        value = h.weekly[:, max(end - weeks - 8, 0):end - weeks].sum(axis=1)
        t = np.zeros(len(post))
        blocks, free = [], []
        for region in sorted(set(h.regions)):
            members = sorted((i for i, g in enumerate(h.regions) if g == region), key=lambda i: (value[i], i))
            for a, b in zip(members[::2], members[1::2]):
                t[a if rng.random() < 0.5 else b] = 1
                blocks.append([a, b])
            if len(members) % 2:
                free.append(members[-1])
                t[members[-1]] = rng.random() < 0.5
        lifted = post * (1 + delta * t)
        model = ancova_cr2(lifted, pre, t, config)
        ri = ancova_randomisation(lifted, pre, t, blocks, free, 0.5, 0.05, draws=1000, seed=r)
        hits += model.ci_low > 0 and ri.ci_low > 0
    return hits / runs


@pytest.mark.parametrize("stores", [6, 16, 40])
def test_store_mde_by_simulation_matches_an_independent_simulation_within_two_points(stores):
    h = _stores(stores, 24, seed=stores)
    runs = 60 if stores == 40 else 150
    found = simulate(h, {"control": 0.5, "bonus": 0.5}, "control", "bonus", 8, mde=0.03, simulations=runs, seed=1)
    if stores == 6:  # 6 stores in 5 regions: one pair and four free stores, 32 assignments, smallest p 1/16
        assert math.isinf(found.mde) and found.min_p_value > 0.05
        assert _independent_power(h, 0.5, 8, 40, seed=3) == 0.0
        return
    assert found.windows == 9 and found.simulations == runs
    below = _independent_power(h, found.mde - 0.02, 8, runs, seed=2)
    above = _independent_power(h, found.mde + 0.02, 8, runs, seed=3)
    print("stores", stores, found.mde, below, above)
    assert below < 0.8 < above, (found.mde, below, above)


def _group(c) -> str:
    """The synthetic retailer's groups, first match wins (pilot.synthetic.GROUPS), computed here by hand."""
    young = c.age_band in ("18-24", "25-34", "35-44")
    if young and c.children >= 1:
        return "young_parents"
    if c.children >= 1:
        return "families"
    if c.age_band == "65+":
        return "seniors"
    return "singles" if c.household_size == 1 else "other"


def test_pool_exhaustion_never_asks_for_more_units_and_the_projection_counts_the_next_stage_eligible(app):
    from pilot import analysis_runs
    from pilot.models import Customer
    from pilot.rollout import get_pilot
    from tests.factories import NOW, plant

    key = plant(app, "too_few", mde=0.01)  # 150 customers, everyone assigned at the start; 1% is out of reach
    with app.app_context():
        pilot = get_pilot(db.session, key)
        nxt = pilot.stage(2)
        nxt.region_codes, nxt.eligible_groups = ["north", "south"], ["seniors", "singles"]
        db.session.commit()
        run = analysis_runs.create_run(db.session, CLI.actor, pilot, cutoff=NOW)
        analysis_runs.execute(db.session, run)
        db.session.commit()
        expected = sum(1 for c in db.session.query(Customer)
                       if c.home_store_id and db.session.get(Store, c.home_store_id).region.code in ("north", "south")
                       and _group(c) in ("seniors", "singles"))
        power, economics = run.results["power"]["bonus"], run.results["economics"]["bonus"]
        assigned = sum(a["n"] for a in run.results["arms"])
    assert power["units_needed"] > assigned  # the target needs more units than the scope has ...
    assert power["more_units_needed"] == 0 and power["pool_exhausted"]  # ... and none are asked for
    assert power["days_needed"] is None and len(power["mde_rel_later"]) == 3
    assert "add no units" in power["explanation"] and "cannot reach" in power["explanation"]
    assert all(p["mde_rel"] < power["mde_rel_now"] for p in power["mde_rel_later"])
    assert 0 < expected < 150
    assert economics["projected_customers"] == int(expected * 0.5)
    assert run.recommendation["decision"] == "extend" and "add no units" in run.recommendation["reasons"][0]["message"]


def test_pool_limited_power_table_asks_for_at_most_what_is_left():
    from pilot.analysis_config import AnalysisConfig
    from pilot.planning import Pool, power_table

    config = AnalysisConfig(unit="customer", primary_metric="spend_per_customer", control="control",
                            allocation={"control": 0.5, "bonus": 0.5}, mechanics={}, alpha=0.05, power=0.8, mde=0.02,
                            margin_rate=0.3)
    arm = {"n": 500, "spend": 500 * 40.0, "spend*spend": 500 * (40.0**2 + 30.0**2), "visits": 500 * 3.0,
           "visits*visits": 500 * (9.0 + 6.0)}
    totals = {"control": arm, "bonus": arm}
    free = power_table(config, totals, 20.0)["bonus"]
    capped = power_table(config, totals, None, pool=Pool(20.0, 300, 28.0))["bonus"]
    assert free["more_units_needed"] > 300
    assert capped["more_units_needed"] == 300 and capped["days_needed"] == pytest.approx(15.0)
    assert not capped["pool_exhausted"] and "only 300" in capped["explanation"]
    roomy = power_table(config, totals, None, pool=Pool(20.0, 10**6, 28.0))["bonus"]
    assert roomy["more_units_needed"] == free["more_units_needed"] and "explanation" not in roomy


def test_plan_endpoints_customer_and_store_pilots_and_their_errors(app, client, auth, tokens):
    _retailer(app, stores=12, customers=800, weeks=26, seed=8)
    with app.app_context():
        from pilot.programmes import get_programme
        from pilot.rollout import create_pilot
        create_pilot(db.session, CLI.actor, get_programme(db.session, "loyalty"), {
            "key": "draft", "name": "Draft", "unit": "store", "primary_metric": "spend_per_customer", "mde": 0.03,
            "stages": [{"name": "S1", "region_codes": ["north", "south"], "allocation": {"control": 0.5, "bonus": 0.5},
                        "planned_start": END.date(), "planned_end": (END + timedelta(weeks=6)).date()}]},
            past_start=True)
        db.session.commit()
    body = _body(start=END.isoformat(), simulations=20)
    r = client.post("/api/v1/pilots/plan", json=body, headers=auth("analyst"))
    assert r.status_code == 200, r.get_json()
    plan = r.get_json()
    assert plan["method"] == "cuped" and plan["eligible"]["customers"] > 0 and plan["assumptions"]
    assert plan["simulated"]["simulations"] == 20 and "assumptions" in plan["analytic"]
    r = client.get("/api/v1/pilots/draft/plan?simulations=20", headers=auth("manager"))
    assert r.status_code == 200, r.get_json()
    store = r.get_json()
    assert store["pilot"] == "draft" and store["method"] == "store_decision" and store["weeks"] == 6
    assert store["store_level"]["stores"] == 6 and store["simulated"]["cannot_be_significant"]
    assert not store["powered"] and "cannot reach significance" in store["message"]
    kinds = {a["kind"] for a in store["alternatives"]}
    assert {"more_stores", "customer_randomisation"} <= kinds
    assert "Randomising customers within the same stores detects" in store["message"]
    assert client.post("/api/v1/pilots/plan", json=body, headers=auth("store")).status_code == 403
    for bad, field in (({"mde": -1}, "mde"), ({"primary_metric": "conversion", "unit": "store"}, "primary_metric"),
                       ({"weeks": 0}, "weeks"), ({"stage": 3}, "stage")):
        r = client.post("/api/v1/pilots/plan", json={**body, **bad}, headers=auth("manager"))
        fields = r.get_json()["error"]["details"]["fields"]
        assert r.status_code == 422 and field in {**fields, **fields.get("json", {})}, (bad, r.get_json())
    bad = {**body, "stages": [{"region_codes": ["mars"], "allocation": {"control": 0.5, "bonus": 0.5}}]}
    assert client.post("/api/v1/pilots/plan", json=bad, headers=auth("manager")).status_code == 422
    assert client.get("/api/v1/pilots/nope/plan", headers=auth("manager")).status_code == 404
    r = client.post("/api/v1/pilots/plan/stores", json={**body, "unit": "store", "stores": 6, "exclude": ["S001"],
                                                        "include": ["S002"], "designs": 2}, headers=auth("manager"))
    assert r.status_code == 200, r.get_json()
    designs = r.get_json()["designs"]
    assert designs and all("S002" in d["store_codes"] and "S001" not in d["store_codes"] for d in designs)
    # the "Plan" step of the pilot form: the page, the proposed stores, and applying one
    from tests.factories import csrf, login
    login(client, tokens["manager"])
    page = client.get("/pilots/draft/plan")
    assert page.status_code == 200 and b"Assumptions" in page.data and b"Propose stores" in page.data
    chosen = designs[0]["store_codes"][:4]
    r = client.post("/pilots/draft/plan/apply", data={"store_codes": ",".join(chosen),
                                                      "csrf_token": csrf(client, "/pilots/draft/plan")})
    assert r.status_code == 302
    with app.app_context():
        from pilot.rollout import get_pilot
        assert get_pilot(db.session, "draft").stage(1).store_codes == chosen
