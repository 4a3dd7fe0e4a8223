"""Store selection (pilot.store_selection): on a chain with planted well-matched stores the top design
is better balanced than random designs; include, exclude, size and the share at risk are honoured."""
from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from pilot.planner import PlanSettings
from pilot.store_power import StoreHistory
from pilot.store_selection import search

START = datetime(2026, 6, 1, tzinfo=UTC)
PLANTED = [f"S{i:03d}" for i in (0, 5, 10, 15, 1, 6, 11, 16, 2, 7, 12, 17)]  # six pairs, two in each of r0, r1, r2


def _chain(seed: int = 4, stores: int = 40, weeks: int = 26) -> StoreHistory:
    """Stores whose sales wander on their own, and twelve planted ones that move together (in six pairs
    of the same level)."""
    rng = np.random.default_rng(seed)
    level = rng.lognormal(np.log(30000), 0.4, stores)
    walk = np.cumsum(rng.normal(0, 0.04, (stores, weeks)), axis=1)
    codes = [f"S{i:03d}" for i in range(stores)]
    regions = [f"r{i % 5}" for i in range(stores)]
    pairs = [PLANTED[k:k + 2] for k in range(0, len(PLANTED), 2)]
    common = walk[codes.index(PLANTED[0])]
    for a, b in pairs:
        i, j = codes.index(a), codes.index(b)
        level[j] = level[i] * 1.01
        walk[i] = walk[j] = common
    weekly = level[:, None] * np.exp(walk + rng.normal(0, 0.01, (stores, weeks)))
    return StoreHistory(codes, regions, weekly)


def _settings(h: StoreHistory, simulations: int = 30) -> PlanSettings:
    return PlanSettings(unit="store", primary_metric="spend_per_customer", alpha=0.05, power=0.8, mde=0.05,
                        allocation={"control": 0.5, "bonus": 0.5}, control="control",
                        mechanics={"control": "control", "bonus": "cumulative_bonus"},
                        stores=[(i, c, r) for i, (c, r) in enumerate(zip(h.codes, h.regions))], groups=None,
                        start=START, weeks=4, simulations=simulations)


def test_the_top_design_finds_the_planted_matches_and_beats_random_designs_on_balance():
    h = _chain()
    out = search(h, _settings(h), include=[], size=12, max_share=None, designs=3)
    top = out["designs"][0]
    assert top["stores"] == 12 and len(set(top["store_codes"]) & set(PLANTED)) >= 10
    assert top["balance"] < out["random_designs"]["balance_median"]
    assert top["balance"] < out["random_designs"]["balance_best"]
    assert top["mde_rel_analytic"] < out["random_designs"]["mde_rel_analytic_median"]
    assert set(top["smd"]) == {"pre_sales", "pre_change"} and top["mde_rel"] is not None
    assert not top["cannot_be_significant"]
    assert [d["rank"] for d in out["designs"]] == list(range(1, len(out["designs"]) + 1))


def test_include_exclude_size_and_share_at_risk_are_honoured():
    h = _chain()
    s = _settings(h, simulations=10)
    out = search(h, s, include=["S003", "S008"], size=10, max_share=None, designs=5)
    for d in out["designs"]:
        assert {"S003", "S008"} <= set(d["store_codes"]) and d["stores"] == 10
    # leaving the planted stores out of the candidates: no design may use them
    rest = [i for i, c in enumerate(h.codes) if c not in PLANTED[:4]]
    h2 = StoreHistory([h.codes[i] for i in rest], [h.regions[i] for i in rest], h.weekly[rest])
    out = search(h2, _settings(h2, simulations=10), include=[], size=8, max_share=None, designs=5)
    assert all(not set(d["store_codes"]) & set(PLANTED[:4]) for d in out["designs"])
    out = search(h, s, include=[], size=None, max_share=0.1, designs=5)
    assert out["designs"] and all(d["share_at_risk"] <= 0.1 + 1e-9 for d in out["designs"])
    assert all(d["stores"] >= 4 for d in out["designs"])


@pytest.mark.parametrize("body, field", [({"exclude": ["nope"]}, "exclude"), ({"include": ["ra0"], "exclude": ["ra0"]},
                                                                              "exclude"), ({}, "stores")])
def test_bad_store_selection_input_is_a_422_naming_the_field(client, world, body, field):
    payload = {"programme": "loyalty", "unit": "store", "mde": 0.1, "stores": 6,
               "stages": [{"region_codes": ["ra", "rb"], "allocation": {"control": 0.5, "bonus": 0.5}}], **body}
    if field == "stores":
        payload.pop("stores")
    r = client.post("/api/v1/pilots/plan/stores", json=payload, headers=world)
    assert r.status_code == 422, r.get_json()
    assert field in r.get_json()["error"]["details"]["fields"]
