"""Store pilots that can reach a decision: the randomisation test over the matched scheme against brute
force, CR2 ANCOVA against the matrices written out, and the store path through the service —
gates counted in stores (and the migration that moves existing gates), guardrails that stop and
pause, power and contamination — checked on the raw rows."""
from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import math
import random
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from scipy import stats
from sqlalchemy import select, text

from experiments.cluster import ancova_cr2
from experiments.randomisation import ancova_randomisation, store_decision
from pilot import analysis_runs, rollout, scheduler
from pilot.aggregation import Cube
from pilot.analysis_config import AnalysisConfig, Gate
from pilot.auth import CLI
from pilot.db import db
from pilot.ingestion import Ingest
from pilot.models import Pilot, Region, Stage, Store
from pilot.programmes import create_programme
from pilot.recommendation import recommend
from pilot.rollout import create_pilot, transition
from pilot.simulate import BONUS, CONTROL
from pilot.store_effects import CONTAMINATION_WARNING, store_results
from tests.factories import NOW, login, pilot_body
from tests.stats_helpers import cr2_reference

# -- the randomisation test against brute-force enumeration ------------------------------------------


def scheme_by_brute_force(units, blocks, treated_in_block, free, q):
    """Every assignment of the scheme and its probability, by itertools."""
    choices = [list(itertools.combinations(b, k)) for b, k in zip(blocks, treated_in_block)]
    out = []
    for picks in itertools.product(*choices):
        for bits in itertools.product((0, 1), repeat=len(free)):
            z = np.zeros(units)
            for chosen in picks:
                z[list(chosen)] = 1
            z[list(free)] = bits
            prob = math.prod(1 / len(c) for c in choices) * math.prod(q if b else 1 - q for b in bits)
            out.append((z, prob))
    return out


def statistic(y, pre, z):
    """The ANCOVA coefficient of z times √(residual sum of squares of z on (1, pre)), by lstsq."""
    if z.sum() in (0, len(z)):
        return None
    coef = np.linalg.lstsq(np.column_stack([np.ones_like(z), z, pre]), y, rcond=None)[0][1]
    fitted = np.column_stack([np.ones_like(z), pre])
    rss = ((z - fitted @ np.linalg.lstsq(fitted, z, rcond=None)[0]) ** 2).sum()
    return coef * math.sqrt(rss)


def brute_p(y, pre, observed, scheme, delta=0.0):
    """P(|s(Z)| ≥ |s(observed)|) under the sharp null of a constant effect delta."""
    control = y - delta * observed
    s_obs = abs(statistic(control, pre, observed))
    total = 0.0
    for z, prob in scheme:
        s = statistic(control, pre, z)
        if s is not None and abs(s) >= s_obs * (1 - 1e-9) - 1e-12:
            total += prob
    return total


DESIGNS = [  # (units, blocks, free, q): the 6 stores in two regions; pairs and leftovers; 3-store blocks
    (6, [[0, 1], [3, 4]], [2, 5], 0.5),
    (11, [[0, 1], [2, 3], [4, 5], [6, 7]], [8, 9, 10], 0.5),
    (10, [[0, 1, 2], [3, 4, 5], [6, 7, 8]], [9], 1 / 3),
]


@pytest.mark.parametrize("units, blocks, free, q", DESIGNS)
def test_randomisation_p_value_interval_and_smallest_p_equal_brute_force(units, blocks, free, q):
    rng = np.random.default_rng(units)
    pre = rng.gamma(5, 200, units)
    observed = np.zeros(units)
    for b in blocks:
        observed[rng.choice(b, 1 if len(b) == 3 else len(b) // 2, replace=False)] = 1
    observed[free] = [1, 0, 1][: len(free)]
    y = 1.03 * pre + rng.normal(0, 40, units) + 60 * observed
    k = [int(observed[b].sum()) for b in blocks]
    scheme = scheme_by_brute_force(units, blocks, k, free, q)
    assert sum(p for _, p in scheme) == pytest.approx(1)
    res = ancova_randomisation(y, pre, observed, blocks, free, q)
    assert res.method == "exact" and res.assignments == res.draws == len(scheme)
    assert res.p_value == pytest.approx(brute_p(y, pre, observed, scheme), abs=1e-12)
    # the smallest p the scheme can give: the smallest brute-force p over every assignment taken as observed
    smallest = min(brute_p(y, pre, z, scheme) for z, _ in scheme if 0 < z.sum() < units)
    assert res.min_p_value == pytest.approx(smallest, abs=1e-12)
    if units == 6:
        assert res.min_p_value == pytest.approx(0.125)  # 16 assignments: p < 0.125 is out of reach
    # the interval by inversion: brute-force p just inside each finite end is above α, just outside at most α
    for end, outward in ((res.ci_low, -1), (res.ci_high, 1)):
        if math.isfinite(end):
            step = 1e-6 * (abs(end) + 1)
            assert brute_p(y, pre, observed, scheme, end - outward * step) > 0.05
            assert brute_p(y, pre, observed, scheme, end + outward * step) <= 0.05
        else:
            assert res.min_p_value > 0.05 or brute_p(y, pre, observed, scheme, outward * 1e9) > 0.05


def test_monte_carlo_is_reproducible_and_close_to_exact():
    units, blocks, free, _ = DESIGNS[1]
    rng = np.random.default_rng(3)
    pre = rng.gamma(5, 200, units)
    observed = np.array([1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 1], dtype=float)
    y = pre + rng.normal(0, 40, units) + 30 * observed
    exact = ancova_randomisation(y, pre, observed, blocks, free)
    mc = ancova_randomisation(y, pre, observed, blocks, free, exact_limit=100, draws=4000, seed=5)
    assert (mc.method, mc.draws, mc.seed) == ("monte_carlo", 4001, 5)
    assert mc == ancova_randomisation(y, pre, observed, blocks, free, exact_limit=100, draws=4000, seed=5)
    assert abs(mc.p_value - exact.p_value) < 4 * math.sqrt(exact.p_value * (1 - exact.p_value) / 4000) + 1e-3


def test_store_ancova_cr2_equals_the_matrices_written_out_and_the_decision_agrees_with_its_interval():
    rng = np.random.default_rng(11)
    disagree = 0
    for _ in range(150):
        units = int(rng.integers(8, 17))
        pre = rng.gamma(4, 300, units)
        treated = np.zeros(units)
        pairs = [[2 * i, 2 * i + 1] for i in range(units // 2)]
        for p in pairs:
            treated[rng.choice(p)] = 1
        y = 1.02 * pre + rng.normal(0, 60, units) * (1 + treated) + rng.normal(40, 40) * treated
        x = np.column_stack([np.ones(units), treated, pre])
        estimate, se, df_bm = cr2_reference(x, y, list(range(units)), [0, 1, 0])
        model = ancova_cr2(y, pre, treated)
        assert (model.effect_abs, model.se, model.df) == (pytest.approx(estimate, rel=1e-9),
                                                          pytest.approx(se, rel=1e-9), pytest.approx(df_bm, rel=1e-9))
        decision, cr2_part, ri = store_decision(y, pre, treated, pairs, list(range(2 * len(pairs), units)))
        assert decision.p_value == max(cr2_part.p_value, ri.p_value)  # significant only when both are
        significant = decision.p_value < 0.05
        disagree += significant != (not decision.ci_low <= 0 <= decision.ci_high)
    assert disagree == 0


# -- the store path through the service ---------------------------------------------------------------

DAYS_PRE, DAYS_POST = 28, 21


def store_world(session, regions=2, per_region=8):
    """Regions z0… with stores of varied size, and the bonus programme."""
    stores = []
    for r in range(regions):
        region = Region(code=f"z{r}", name=f"Region {r}")
        stores += [Store(code=f"z{r}s{i}", name=f"Store {r}.{i}", region=region, size_sqm=400 + 50 * i)
                   for i in range(per_region)]
    session.add_all(stores)
    create_programme(session, CLI.actor, {"key": "prog", "name": "Programme", "variants": [CONTROL, BONUS]})
    session.flush()
    return stores


def start_store_pilot(session, key="sp", gate=None, guardrails=None):
    from pilot.programmes import get_programme
    pilot = create_pilot(session, CLI.actor, get_programme(session, "prog"), {
        "key": key, "name": "Store pilot", "unit": "store", "layer": key, "salt": "fixed",
        "primary_metric": "spend_per_customer",
        "guardrails": guardrails if guardrails is not None else [{"metric": "spend_per_visit", "max_harm": 0.03}],
        "stages": [{"region_codes": ["z0", "z1"], "allocation": {"control": 0.5, "bonus": 0.5},
                    **({"gate": gate} if gate else {})}]})
    return pilot


def store_history(session, stores, start, arm_of, visits_lift=0.0, basket_lift=0.0, crossover=0.0, seed=1,
                  days=range(-DAYS_PRE, DAYS_POST)):
    """Sales of each store's regular customers: a store level (lognormal), daily visits around it,
    baskets around the store's basket; treated stores' visits and baskets move by the lifts after
    the start. A share `crossover` of a store's customers also shop in the next store of the region."""
    cross = random.Random(seed + 1)  # the crossover apart: the same history before the start, whatever the lifts
    rows, number = [], 0
    for store in stores:
        rng = random.Random(f"{seed}:{store.code}")
        level, basket = rng.lognormvariate(0, 0.3), 30 * rng.lognormvariate(0, 0.2)
        customers = [f"{store.code}-c{i}" for i in range(30)]
        neighbour = stores[(stores.index(store) + 1) % len(stores)]
        for day in days:
            treated = day >= 0 and arm_of.get(store.code) == "bonus"
            for _ in range(max(0, round(rng.gauss(8 * level * (1 + visits_lift * treated), 1.5)))):
                number += 1
                customer = rng.choice(customers)
                amount = basket * rng.lognormvariate(-0.1, 0.4) * (1 + basket_lift * treated)
                rows.append((number, {"event_id": f"{store.code}-{day}-{number}", "customer": customer, "store": store.code,
                                      "occurred_at": (start + timedelta(days=day, hours=rng.uniform(8, 20))).isoformat(),
                                      "amount": f"{amount:.2f}", "items": "2", "channel": "store"}))
            if day >= 0 and cross.random() < crossover * 3:  # a regular customer visits the neighbour store
                number += 1
                rows.append((number, {"event_id": f"x-{store.code}-{day}-{number}",
                                      "customer": cross.choice(customers[:10]),
                                      "store": neighbour.code,
                                      "occurred_at": (start + timedelta(days=day, hours=21)).isoformat(),
                                      "amount": f"{basket:.2f}", "items": "1", "channel": "store"}))
    ingest = Ingest(session, CLI.actor, "cli", source="test")
    ingest.add_all(rows)
    return ingest.finish().accepted


def raw_store_values(session, pilot, start, cutoff):
    """Per enrolled store from the raw rows: arm, region, spend and visits per day in the stage and in
    the window of the same length before it, and the 56 days' sales before the start (the matching)."""
    arms = pd.read_sql(text("SELECT e.store_id, e.arm, s.code, r.code AS region FROM enrolments e "
                            "JOIN stores s ON s.id = e.store_id JOIN regions r ON r.id = s.region_id "
                            "WHERE e.pilot_id = :p"), session.connection(), params={"p": pilot.id})
    tx = pd.read_sql(text("SELECT store_id, customer_id, occurred_at, amount, type FROM transactions"),
                     session.connection())
    tx["occurred_at"] = pd.to_datetime(tx["occurred_at"], utc=True, format="mixed")
    days = (cutoff - start).total_seconds() / 86400
    post = tx[(tx.occurred_at >= pd.Timestamp(start)) & (tx.occurred_at < pd.Timestamp(cutoff))]
    pre = tx[(tx.occurred_at >= pd.Timestamp(start - (cutoff - start))) & (tx.occurred_at < pd.Timestamp(start))]
    match = tx[(tx.occurred_at >= pd.Timestamp(start - timedelta(days=56))) & (tx.occurred_at < pd.Timestamp(start))]
    s = arms.set_index("store_id")
    for name, part in (("y", post), ("x", pre)):
        s[name] = part.groupby("store_id").amount.sum().astype(float).reindex(s.index, fill_value=0) / days
        s[f"{name}_visits"] = part.groupby("store_id").size().reindex(s.index, fill_value=0) / days
    s["matching"] = match.groupby("store_id").amount.sum().astype(float).reindex(s.index, fill_value=0)
    return s, post


def start_at(session, pilot, start, monkeypatch):
    """Start the pilot as if it were `start`: the matching reads the 56 days before it."""
    monkeypatch.setattr(rollout, "utcnow", lambda: start)
    transition(session, CLI.actor, pilot, "start")
    monkeypatch.undo()


def test_a_store_pilot_decides_on_stores_and_stops_on_harm_checked_on_the_raw_rows(app, client, tokens, monkeypatch):
    with app.app_context():
        session = db.session
        stores = store_world(session)
        pilot = start_store_pilot(session)
        assert pilot.stages[0].gate["min_units_per_arm"] == 3 and pilot.stages[0].gate["sample_unit"] == "store"
        start = NOW - timedelta(days=DAYS_POST)
        # the pre-period is in before the start (the matching reads it), the stage's sales after
        store_history(session, stores, start, {}, seed=2, days=range(-DAYS_PRE, 0))
        start_at(session, pilot, start, monkeypatch)
        arm_of = dict(session.execute(text("SELECT s.code, e.arm FROM enrolments e JOIN stores s ON s.id = e.store_id "
                                           "WHERE e.pilot_id = :p"), {"p": pilot.id}).all())
        store_history(session, stores, start, arm_of, visits_lift=0.15, basket_lift=-0.15, crossover=0.2, seed=2,
                      days=range(0, DAYS_POST))
        session.commit()
        run = analysis_runs.create_run(session, CLI.actor, pilot, cutoff=NOW)
        analysis_runs.execute(session, run)
        session.commit()
        s, post = raw_store_values(session, pilot, start, NOW)
        results, rec = run.results, run.recommendation
    treated = (s.arm == "bonus").to_numpy(float)
    rows = {(r["metric"], r["method"]): r for r in results["metrics"]}
    primary = rows[("spend_per_customer", "ancova_cr2+randomisation")]
    # CR2 ANCOVA on the store-level values, written out
    x = np.column_stack([np.ones(len(s)), treated, s.x])
    estimate, se, df_bm = cr2_reference(x, s.y.to_numpy(), list(range(len(s))), [0, 1, 0])
    assert primary["effect_abs"] == pytest.approx(estimate, rel=1e-7)
    assert primary["p_cr2"] is not None and primary["df_bm"] == pytest.approx(df_bm, rel=1e-7)
    assert primary["ci_cr2"][1] - primary["ci_cr2"][0] == pytest.approx(2 * se * stats.t.ppf(0.975, df_bm), rel=1e-7)
    # the randomisation test over the scheme rebuilt from the raw rows: pairs by the 56 days' sales within region
    blocks, free = [], []
    order = s.reset_index().sort_values(["region", "matching", "code"])
    position = {sid: i for i, sid in enumerate(s.index)}
    for _, part in order.groupby("region"):
        ids = [position[i] for i in part.store_id]
        blocks += [ids[i:i + 2] for i in range(0, len(ids) - len(ids) % 2, 2)]
        free += ids[len(ids) - len(ids) % 2:]
    scheme = scheme_by_brute_force(len(s), blocks, [int(treated[b].sum()) for b in blocks], free, 0.5)
    assert primary["randomisation"]["method"] == "exact" and primary["randomisation"]["assignments"] == len(scheme)
    assert primary["p_randomisation"] == pytest.approx(brute_p(s.y.to_numpy(), s.x.to_numpy(), treated, scheme),
                                                       abs=1e-12)
    assert primary["min_p_value"] == pytest.approx(2 / len(scheme))
    # the guardrail (average basket −15%) is harmed: the store pilot stops, with the gate counted in stores
    guard = rows[("spend_per_visit", "ancova_cr2+randomisation")]
    assert guard["role"] == "guardrail" and guard["harmed"] and guard["p_value"] < 0.05
    assert rec["decision"] == "stop" and rec["reasons"][0]["code"] == "guardrail_harmed"
    assert results["power"]["bonus"]["mde_rel_now"] > 0 and results["power"]["bonus"]["sample_unit"] == "store"
    # contamination per arm from the raw rows: customers (and their spend) seen in stores of the other arm
    post = post.assign(arm=post.store_id.map(s.arm))
    for arm, row in results["contamination"]["arms"].items():
        seen = post[post.arm == arm].customer_id.unique()
        mine = post[post.customer_id.isin(seen)]
        mixed = mine.groupby("customer_id").arm.nunique()
        assert row["customer_share"] == pytest.approx((mixed > 1).mean(), rel=1e-12)
        elsewhere = mine[(mine.arm != arm)].amount.astype(float).sum()
        assert row["spend_share_in_other_arms"] == pytest.approx(elsewhere / mine.amount.astype(float).sum(), rel=1e-9)
    warned = {w["arm"] for w in results["contamination"]["warnings"]}
    assert warned == {a for a, r in results["contamination"]["arms"].items() if r["customer_share"] > CONTAMINATION_WARNING}
    assert warned  # a fifth of the regulars cross over: above the threshold
    # the store report says it: power counted in stores, the design's smallest p, the contamination
    login(client, tokens["analyst"])
    page = client.get(f"/analyses/{run.id}").get_data(as_text=True)
    assert "Counted in stores" in page and "the smallest p-value this matched design can give" in page
    assert 'id="contamination"' in page and "also bought in another arm" in page


def test_the_scheduler_pauses_a_harmed_store_pilot(app, monkeypatch):
    with app.app_context():
        session = db.session
        stores = store_world(session)
        pilot = start_store_pilot(session, key="harm")
        start = NOW - timedelta(days=DAYS_POST)
        start_at(session, pilot, start, monkeypatch)
        arm_of = dict(session.execute(text("SELECT s.code, e.arm FROM enrolments e JOIN stores s ON s.id = e.store_id "
                                           "WHERE e.pilot_id = :p"), {"p": pilot.id}).all())
        store_history(session, stores, start, arm_of, basket_lift=-0.3, seed=4)
        session.commit()
        out = scheduler.analyse_running(session)
        session.commit()
        assert [p["pilot"] for p in out["paused"]] == ["harm"] and "spend_per_visit" in out["paused"][0]["reason"]
        assert session.scalar(select(Pilot.state).where(Pilot.key == "harm")) == "paused"


def cube_of(values_by_store):
    """A store cube from (arm, block, pre spend, post spend, pre visits, post visits) per store."""
    cube = Cube()
    for i, (arm, block, pre, post, pre_v, post_v) in enumerate(values_by_store):
        cube.stores[(arm, i)] = {"spend": post, "visits": post_v, "items": 2 * post_v, "pre_spend": pre,
                                 "pre_visits": pre_v, "pre_items": 2 * pre_v, "block": block}
    return cube


CONFIG = AnalysisConfig(unit="store", primary_metric="spend_per_customer", control="control",
                        allocation={"control": 0.5, "bonus": 0.5}, mechanics={"control": "control", "bonus": "x"},
                        alpha=0.05, power=0.8, mde=0.05, margin_rate=0.3, gate=Gate(min_days=14, min_units_per_arm=3))


def test_six_stores_cannot_be_significant_and_the_recommendation_says_so():
    # two regions of three stores: a pair and a leftover each — 16 assignments, so p ≥ 0.125 whatever happens
    big = [("control", 0, 1000, 1000, 50, 50), ("bonus", 0, 1010, 1500, 50, 75), ("control", -1, 700, 690, 30, 30),
           ("control", 1, 1300, 1310, 60, 61), ("bonus", 1, 1290, 1900, 60, 90), ("bonus", -1, 900, 1350, 40, 60)]
    results = store_results(CONFIG, cube_of(big), days=28)
    row = next(r for r in results["metrics"] if r["metric"] == "spend_per_customer")
    assert row["method"] == "ancova_cr2+randomisation" and row["randomisation"]["assignments"] == 16
    assert row["min_p_value"] == pytest.approx(0.125) and row["cannot_be_significant"]
    assert row["p_value"] >= 0.125 and row["message"] == "cannot_be_significant"
    assert row["ci_low"] == -math.inf or row["ci_low"] is None  # no effect size is rejected
    rec = recommend(CONFIG, results, {"problems": []})
    reason = rec["reasons"][0]
    assert rec["decision"] == "extend" and reason["code"] == "cannot_be_significant"
    assert "Cannot be significant with this design" in reason["message"] and rec["action"]["more_units"] >= 6


def test_ten_stores_with_a_guardrail_can_be_significant_the_guardrail_is_not_in_the_primarys_family():
    # two regions of five: two pairs and a leftover each, 64 assignments, p ≥ 1/32. The guardrail is a
    # one-sided harm check that can only block an advance, so it does not split α with the primary: the
    # floor stays 1/32 (Holm over primary + guardrail made it 1/16 > α, and every such pilot "could not
    # be significant"); the guardrail's own harm test is on its raw p, with its own floor
    rng = np.random.default_rng(4)
    stores = []
    for region in range(2):
        for i in range(5):
            block = 2 * region + i // 2 if i < 4 else -1
            arm = ("control", "bonus")[(i + region) % 2]
            pre = 1000 + 300 * i + rng.normal(0, 20)
            lift = 1.5 if arm == "bonus" else 1.0
            stores.append((arm, block, pre, pre * lift, pre / 30, pre * lift / 30))
    guarded = dataclasses.replace(CONFIG, guardrails={"spend_per_visit": 0.03})
    results = store_results(guarded, cube_of(stores), days=28)
    decision = [r for r in results["metrics"] if r["method"] == "ancova_cr2+randomisation"]
    row = next(r for r in decision if r["metric"] == "spend_per_customer")
    guard = next(r for r in decision if r["metric"] == "spend_per_visit")
    assert row["randomisation"]["assignments"] == 64 and row["min_p_value"] == pytest.approx(2 / 64)
    assert row["min_p_holm"] == pytest.approx(2 / 64) and not row["cannot_be_significant"]
    # one arm: its Holm p is its own p; the decision p is the larger of the CR2 and randomisation p's
    assert row["p_holm"] == row["p_value"] == pytest.approx(max(row["p_cr2"], row["p_randomisation"]))
    assert row["p_randomisation"] == pytest.approx(2 / 64) and row["p_value"] < 0.05
    assert guard["min_p_holm"] == pytest.approx(guard["min_p_value"]) and guard["p_holm"] is None
    assert not guard["harmed"]
    rec = recommend(guarded, results, {"problems": []})
    assert rec["decision"] == "advance" and rec["reasons"][0]["code"] == "gate_met"


def test_two_arms_share_alpha_by_holm_over_their_primaries_and_the_guardrails_stay_out():
    # 3 arms in 8 blocks of (control, bonus, gold): each arm against control is 8 pairs (256 assignments)
    from statsmodels.stats.multitest import multipletests
    rng = np.random.default_rng(8)
    stores = []
    for block in range(8):
        for arm, lift in (("control", 1.0), ("bonus", 1.25), ("gold", 1.04)):
            pre = 1000 + 150 * block + rng.normal(0, 30)
            post = pre * lift * np.exp(rng.normal(0, 0.03))
            stores.append((arm, block, pre, post, pre / 30, post / 30 * np.exp(rng.normal(0, 0.02))))
    config = dataclasses.replace(CONFIG, allocation={"control": 1 / 3, "bonus": 1 / 3, "gold": 1 / 3},
                                 mechanics={"control": "control", "bonus": "x", "gold": "y"},
                                 guardrails={"spend_per_visit": 0.03})
    results = store_results(config, cube_of(stores), days=28)
    decision = [r for r in results["metrics"] if r["method"] == "ancova_cr2+randomisation"]
    primaries = [r for r in decision if r["role"] == "primary"]
    guards = [r for r in decision if r["role"] == "guardrail"]
    assert [r["arm"] for r in primaries] == ["bonus", "gold"] and len(guards) == 2
    assert all(r["randomisation"]["assignments"] == 256 for r in primaries)
    reference = multipletests([r["p_value"] for r in primaries], method="holm")[1]
    assert [r["p_holm"] for r in primaries] == pytest.approx(list(reference), rel=1e-12)
    assert all(r["min_p_holm"] == pytest.approx(2 * 2 / 256) for r in primaries)
    assert all(g["p_holm"] is None and g["min_p_holm"] == pytest.approx(g["min_p_value"]) for g in guards)
    assert primaries[0]["p_holm"] < 0.05  # the +25% arm is significant after Holm; the power row counts the arms
    assert results["power"]["bonus"]["min_p_holm"] == pytest.approx(4 / 256)


def test_store_gates_count_stores_on_the_api_and_the_page(client, world, tokens):
    body = pilot_body("sp", unit="store")
    assert client.post("/api/v1/pilots", json=body, headers=world).status_code == 201
    assert client.post("/api/v1/pilots", json=pilot_body("cp"), headers=world).status_code == 201
    store_gate = client.get("/api/v1/pilots/sp", headers=world).json["stages"][0]["gate"]
    customer_gate = client.get("/api/v1/pilots/cp", headers=world).json["stages"][0]["gate"]
    assert (store_gate["min_units_per_arm"], store_gate["sample_unit"]) == (3, "store")
    assert (customer_gate["min_units_per_arm"], customer_gate["sample_unit"]) == (1000, "customer")
    # a gate set by hand keeps its number, counted in the pilot's unit
    changed = client.patch("/api/v1/pilots/sp/stages/1", json={"gate": {"min_units_per_arm": 5}}, headers=world)
    assert changed.status_code == 200, changed.json
    assert client.get("/api/v1/pilots/sp", headers=world).json["stages"][0]["gate"] == {
        **store_gate, "min_units_per_arm": 5}
    # a draft changing its unit moves a default gate to the new unit's default
    assert client.patch("/api/v1/pilots/cp", json={"unit": "store"}, headers=world).status_code == 200
    assert client.get("/api/v1/pilots/cp", headers=world).json["stages"][0]["gate"] == {
        **customer_gate, "min_units_per_arm": 3, "sample_unit": "store"}
    assert client.patch("/api/v1/pilots/cp", json={"unit": "customer"}, headers=world).status_code == 200
    login(client, tokens["manager"])
    page = client.get("/pilots/sp").get_data(as_text=True)
    assert "5 stores per arm" in page and "1000 customers per arm" not in page
    assert "1000 customers per arm" in client.get("/pilots/cp").get_data(as_text=True)


def load_migration():
    path = Path(__file__).parents[1] / "pilot" / "migrations" / "versions" / "0013_store_sized_gates.py"
    spec = importlib.util.spec_from_file_location("migration_0013", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_migration_0013_moves_existing_store_gates_to_stores(app):
    migration = load_migration()
    with app.app_context():
        session = db.session
        store_world(session)
        old_default = {"min_days": 14, "min_units_per_arm": 1000, "require_significant": True}
        store = start_store_pilot(session, key="old-store")
        by_hand = start_store_pilot(session, key="hand-store")
        customer = start_store_pilot(session, key="old-customer")
        customer.unit = "customer"
        store.stages[0].gate, by_hand.stages[0].gate = dict(old_default), {**old_default, "min_units_per_arm": 8}
        customer.stages[0].gate = dict(old_default)
        session.commit()
        conn = session.connection()
        with Operations.context(MigrationContext.configure(conn)):
            migration.upgrade()
        session.expire_all()

        def gate(key):
            return session.scalar(select(Stage.gate).join(Pilot).where(Pilot.key == key))
        assert gate("old-store") == {**old_default, "min_units_per_arm": 3, "sample_unit": "store"}
        assert gate("hand-store") == {**old_default, "min_units_per_arm": 8, "sample_unit": "store"}
        assert gate("old-customer") == {**old_default, "sample_unit": "customer"}
        with Operations.context(MigrationContext.configure(conn)):
            migration.downgrade()
        session.expire_all()
        assert gate("old-store") == old_default and gate("old-customer") == old_default
        assert gate("hand-store") == {**old_default, "min_units_per_arm": 8}
