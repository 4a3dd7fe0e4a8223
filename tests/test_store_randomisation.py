"""Store-level pilots: matched strata within region beat simple randomisation on balance."""
import random
import statistics

import pytest

from pilot.bucketing import variant_for
from pilot.store_randomisation import balance, block_arms, matched_arms
from tests.factories import act, pilot_body

WEIGHTS = {"control": 0.5, "treatment": 0.5}


def generated_stores(seed):
    rng = random.Random(seed)
    return [(f"S{r}{i}", f"region{r}", rng.lognormvariate(10 + 0.3 * r, 0.6)) for r in range(5) for i in range(12)]


def mean_abs_smd(stores, arms):
    values = {code: v for code, _, v in stores}
    return abs([row for row in balance(values, arms, "control") if row["arm"] == "treatment"][0]["smd"])


def test_matched_design_is_better_balanced_than_simple_randomisation():
    matched, simple = [], []
    for seed in range(200):
        stores = generated_stores(seed)
        matched.append(mean_abs_smd(stores, matched_arms(stores, WEIGHTS, f"salt{seed}")))
        simple.append(mean_abs_smd(stores, {c: variant_for(f"salt{seed}", c, WEIGHTS) for c, _, _ in stores}))
    assert statistics.mean(matched) < 0.5 * statistics.mean(simple)
    assert statistics.mean(matched) < 0.1


def test_matching_is_deterministic_and_follows_weights_within_region():
    stores = generated_stores(1)
    first = matched_arms(stores, WEIGHTS, "s")
    assert first == matched_arms(list(reversed(stores)), WEIGHTS, "s")
    assert first != matched_arms(stores, WEIGHTS, "other salt")
    for r in range(5):
        arms = [first[c] for c, region, _ in stores if region == f"region{r}"]
        assert arms.count("control") == arms.count("treatment") == 6
    assert block_arms({"a": 0.25, "b": 0.25, "c": 0.5}) == ["a", "b", "c", "c"]


def test_store_pilot_api_balance_and_status(client, world, auth):
    body = pilot_body("sp", unit="store")
    body["stages"] = [{"region_codes": ["ra", "rb", "rc"], "allocation": {"control": 0.5, "discount": 0.5}}]
    assert client.post("/api/v1/pilots", json=body, headers=world).status_code == 201
    act(client, world, "sp", "start")
    table = client.get("/api/v1/pilots/sp/balance", headers=auth("analyst")).json
    rows = {r["arm"]: r for r in table["arms"]}
    assert rows["control"]["stores"] == rows["discount"]["stores"] == 12
    enrolments = client.get("/api/v1/pilots/sp/enrolments?limit=100", headers=world).json["items"]
    arm_of = {e["store"]: e["arm"] for e in enrolments}
    sizes = {f"{r}{i}": 500 + 137 * i for r in ("ra", "rb", "rc") for i in range(8)}  # as the fixture made them
    by_arm = {a: [sizes[c] for c, x in arm_of.items() if x == a] for a in ("control", "discount")}
    pooled = ((statistics.variance(by_arm["control"]) + statistics.variance(by_arm["discount"])) / 2) ** 0.5
    smd = (statistics.mean(by_arm["discount"]) - statistics.mean(by_arm["control"])) / pooled
    assert rows["discount"]["smd"] == pytest.approx(smd, rel=1e-12)
    assert abs(smd) <= 137 / pooled  # paired on size: no pair differs by more than one size step
    status = client.get("/api/v1/stores/ra0/status", headers=world).json["pilots"][0]
    assert status["arm"] == arm_of["ra0"]
    assert status["role"] == ("control" if arm_of["ra0"] == "control" else "treatment")
    assert len(status["at_the_till"]) == 1
    customer_pilot = pilot_body("cp", layer="other")
    client.post("/api/v1/pilots", json=customer_pilot, headers=world)
    assert client.get("/api/v1/pilots/cp/balance", headers=world).status_code == 409
