"""Pilots: configuration rules, lifecycle transitions (and refusals), enrolment, store status."""
import pytest

from tests.factories import ALLOCATION, PROGRAMME, act, pilot_body


def test_programme_variants_carry_descriptions_and_validation(client, world):
    got = client.get("/api/v1/programmes/loyalty", headers=world).json
    assert [v["description"] for v in got["variants"]][1] == "5% off every purchase with the card."
    bad = {**PROGRAMME, "key": "bad", "variants": [{"key": "d", "mechanic": "fixed_discount",
                                                    "parameters": {"rate": 0.9}}]}
    r = client.post("/api/v1/programmes", json=bad, headers=world)
    assert r.status_code == 422 and r.json["error"]["details"]["fields"]["variants"]["0"]["parameters"]["rate"]
    r = client.post("/api/v1/programmes", json={**bad, "variants": [{"key": "x", "mechanic": "magic"}]}, headers=world)
    assert r.status_code == 422


@pytest.mark.parametrize("change, message", [
    ({"stages": [{"region_codes": ["ra"], "allocation": {"discount": 1.0}}]}, "exactly one control"),
    ({"stages": [{"region_codes": ["ra"], "allocation": {"control": 0.5, "discount": 0.4}}]}, "sum to 1"),
    ({"stages": [{"region_codes": ["ra"], "allocation": {"control": 0.5, "ghost": 0.5}}]}, "unknown variant"),
    ({"stages": [{"region_codes": ["nowhere"], "allocation": ALLOCATION}]}, "unknown region"),
    ({"stages": [{"store_codes": ["zz9"], "allocation": ALLOCATION}]}, "unknown store"),
    ({"stages": [{"region_codes": ["ra"], "allocation": ALLOCATION, "eligible_groups": ["martians"]}]},
     "unknown customer group"),
    ({"stages": [{"region_codes": ["ra"], "allocation": ALLOCATION, "planned_start": "2026-03-01",
                  "planned_end": "2026-02-01"}]}, "before planned_start"),
    ({"primary_metric": "happiness"}, "Unknown metric 'happiness'"),  # a catalogue or defined key (#25)
])
def test_pilot_configuration_is_validated(client, world, change, message):
    r = client.post("/api/v1/pilots", json={**pilot_body(), **change}, headers=world)
    assert r.status_code == 422 and message in str(r.json["error"]), r.json


def test_lifecycle_with_enrolment_history(client, world):
    assert client.post("/api/v1/pilots", json=pilot_body(), headers=world).status_code == 201
    assert act(client, world, "p1", "pause").json["error"]["code"] == "invalid_transition"
    started = act(client, world, "p1", "start").json
    assert started["state"] == "running" and started["current_stage"] == 1
    active = client.get("/api/v1/pilots/p1/enrolments?active=true&limit=100", headers=world).json["items"]
    assert sorted({e["region"] for e in active}) == ["ra", "rb"] and len(active) == 16
    assert act(client, world, "p1", "start").status_code == 409
    assert act(client, world, "p1", "pause").json["state"] == "paused"
    assert act(client, world, "p1", "advance").json["error"]["code"] == "invalid_transition"
    assert act(client, world, "p1", "resume").json["state"] == "running"
    advanced = act(client, world, "p1", "advance", override=True, reason="test: no analysis").json  # (no analysis: the gate is overridden)
    assert advanced["current_stage"] == 2 and advanced["stages"][0]["ended_at"]
    enrolments = client.get("/api/v1/pilots/p1/enrolments?limit=100", headers=world).json["items"]
    assert len(enrolments) == 24 and {e["stage"] for e in enrolments if e["region"] == "ra"} == {1}
    last = act(client, world, "p1", "advance")
    assert last.status_code == 409 and last.json["error"]["code"] == "last_stage"
    assert act(client, world, "p1", "rollback").status_code == 422  # a reason is required
    rolled = act(client, world, "p1", "rollback", reason="margin too thin")
    assert rolled.json["state"] == "rolled_back"
    history = client.get("/api/v1/pilots/p1/enrolments?active=false&limit=100", headers=world).json["items"]
    assert len(history) == 24 and all(e["reason"] == "margin too thin" and e["withdrawn_at"] for e in history)
    timeline = client.get("/api/v1/pilots/p1/timeline?limit=100", headers=world).json["items"]
    assert [e["action"] for e in timeline] == ["create", "start", "pause", "resume", "override_gate", "advance",
                                                   "rollback"]
    assert act(client, world, "p1", "resume").status_code == 409


def test_start_refusals(client, world):
    no_scope = pilot_body("p2")
    no_scope["stages"] = [{"store_codes": [], "region_codes": [], "allocation": ALLOCATION}]
    client.post("/api/v1/pilots", json=no_scope, headers=world)
    r = act(client, world, "p2", "start")
    assert r.status_code == 409 and r.json["error"]["code"] == "no_scope"
    assert client.get("/api/v1/pilots/p2", headers=world).json["state"] == "draft"  # nothing half-done


def test_one_live_pilot_per_store_and_layer(client, world):
    client.post("/api/v1/pilots", json=pilot_body("a"), headers=world)
    client.post("/api/v1/pilots", json=pilot_body("b"), headers=world)
    # another layer may share stores when it declares the pilots independent (else: overlapping_pilot)
    client.post("/api/v1/pilots", json=pilot_body("c", layer="pricing", independent_of=["a", "b"]), headers=world)
    assert act(client, world, "a", "start").status_code == 200
    clash = act(client, world, "b", "start")
    assert clash.status_code == 409 and clash.json["error"]["code"] == "store_in_other_pilot"
    assert "ra0" in clash.json["error"]["details"]["stores"]
    assert act(client, world, "c", "start").status_code == 200  # another layer may share stores
    act(client, world, "a", "complete", override=True, reason="test: no analysis")
    assert act(client, world, "b", "start").status_code == 200  # freed once a completes


def test_running_stage_keeps_scope_and_variants(client, world):
    client.post("/api/v1/pilots", json=pilot_body(), headers=world)
    act(client, world, "p1", "start")
    patch = lambda body: client.patch("/api/v1/pilots/p1/stages/1", json=body, headers=world)  # noqa: E731
    assert patch({"region_codes": ["ra"]}).json["error"]["code"] == "running_stage_scope"
    assert patch({"allocation": {"control": 0.5, "discount": 0.5}}).json["error"]["code"] == "running_stage_variants"
    ok = patch({"allocation": {"control": 0.4, "discount": 0.2, "tiers": 0.2, "bonus": 0.2}, "planned_end": "2099-03-31"})
    assert ok.status_code == 200 and ok.json["allocation"]["control"] == 0.4
    assert client.patch("/api/v1/pilots/p1", json={"salt": "new"}, headers=world).json["error"]["code"] == \
        "locked_when_live"
    assert client.patch("/api/v1/pilots/p1", json={"mde": 0.05}, headers=world).json["error"]["code"] == \
        "analysis_plan_locked"  # (amended with a reason: tests/test_plan_lock_and_overlap.py)
    assert client.delete("/api/v1/pilots/p1", headers=world).status_code == 409
    assert client.post("/api/v1/pilots/p1/stages", json={"region_codes": ["rc"], "allocation": ALLOCATION},
                       headers=world).json["position"] == 3


def test_store_status_scoped_to_the_store_token(client, world, auth):
    client.post("/api/v1/pilots", json=pilot_body(), headers=world)
    client.post("/api/v1/pilots/p1/stages", json={"store_codes": ["T001"], "allocation": ALLOCATION}, headers=world)
    assert client.get("/api/v1/stores/T001/status", headers=auth("store")).json["enrolled"] is False
    act(client, world, "p1", "start")
    act(client, world, "p1", "advance", override=True, reason="test: no analysis")
    act(client, world, "p1", "advance", override=True, reason="test: no analysis")
    status = client.get("/api/v1/stores/T001/status", headers=auth("store")).json
    assert status["enrolled"] and status["pilots"][0]["stage"] == 3
    till = {t["variant"]: t["description"] for t in status["pilots"][0]["at_the_till"]}
    assert till["discount"] == "5% off every purchase with the card." and len(till) == 4
    assert client.get("/api/v1/stores/T002/status", headers=auth("store")).status_code == 403
    assert client.get("/api/v1/stores/ra1/status", headers=auth("analyst")).json["pilots"][0]["role"] == \
        "customer_randomised"
