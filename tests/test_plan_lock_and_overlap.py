"""The pre-registered analysis plan (locked at the start, amended with a reason into versions) and no
silent overlap between live pilots of the same programme kind in different layers."""
from __future__ import annotations

from sqlalchemy import select

from pilot.db import db
from pilot.models import AuditEvent
from tests.factories import ALLOCATION, VALID, act, assign, pilot_body


def test_the_plan_locks_at_the_start_and_changes_only_as_an_amendment(app, client, running, auth):
    plan = client.get("/api/v1/pilots/p1/analysis-plan", headers=auth("analyst")).json
    assert plan["locked"] and plan["plan_version"] == 1 and [v["version"] for v in plan["versions"]] == [1]
    assert plan["versions"][0]["plan"]["primary_metric"] == "spend_per_customer"
    locked = client.patch("/api/v1/pilots/p1", json={"primary_metric": "visits_per_customer", "mde": 0.01},
                          headers=running)
    assert locked.status_code == 409 and locked.json["error"]["code"] == "analysis_plan_locked"
    assert locked.json["error"]["details"]["fields"] == ["primary_metric", "mde"]
    gate = client.patch("/api/v1/pilots/p1/stages/2", json={"gate": {"min_days": 3}}, headers=running)
    assert gate.status_code == 409 and gate.json["error"]["code"] == "analysis_plan_locked"
    assert client.patch("/api/v1/pilots/p1", json={"name": "Renamed", "mde": 0.02}, headers=running).status_code == 200
    before = client.post("/api/v1/pilots/p1/analyses", json={}, headers=auth("analyst")).json
    assert before["config"]["plan_version"] == 1
    amend = "/api/v1/pilots/p1/analysis-plan/amendments"
    no_reason = client.post(amend, json={"mde": 0.03}, headers=running)
    assert no_reason.status_code == 422 and "reason" in no_reason.json["error"]["details"]["fields"]["json"]
    bad = client.post(amend, json={"reason": "x", "gates": {"9": {"min_days": 3}}}, headers=running)
    assert bad.status_code == 422 and "gates.9" in bad.json["error"]["details"]["fields"]
    assert client.post(amend, json={"reason": "x", "mde": 0.03}, headers=auth("analyst")).status_code == 403
    done = client.post(amend, json={"reason": "Finance asks for a 3% bar", "mde": 0.03,
                                    "gates": {"2": {"min_days": 21}}}, headers=running)
    assert done.status_code == 201, done.json
    assert done.json["plan_version"] == 2 and [v["reason"] for v in done.json["versions"]] == [
        None, "Finance asks for a 3% bar"]
    pilot = client.get("/api/v1/pilots/p1", headers=running).json
    assert pilot["mde"] == 0.03 and pilot["stages"][1]["gate"]["min_days"] == 21 and pilot["plan_version"] == 2
    # the analysis before the amendment no longer opens the gate
    unmet = act(client, running, "p1", "advance").json["error"]["details"]["unmet"]
    assert any(c["condition"] == "plan_version" and (c["run_plan_version"], c["plan_version"]) == (1, 2)
               for c in unmet)
    after = client.post("/api/v1/pilots/p1/analyses", json={}, headers=auth("analyst")).json
    assert after["config"]["plan_version"] == 2 and after["config"]["mde"] == 0.03
    with app.app_context():
        event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "amend_plan"))
    assert event.actor == "token:2:manager test" and event.after["reason"] == "Finance asks for a 3% bar"
    assert event.before["mde"] == 0.02 and event.after["plan_version"] == 2
    from pilot import governance, rollout
    with app.app_context():
        record = governance.record_of(db.session, rollout.get_pilot(db.session, "p1"))
    assert record["plan_version"] == 2 and [a["reason"] for a in record["amendments"]] == ["Finance asks for a 3% bar"]
    assert [d["action"] for d in record["decisions"]] == ["amend_plan"]


def test_overlap_is_refused_unless_declared_independent(app, client, running, auth):
    assert assign(client, auth("feed"), "c0", store="ra0").json["assigned"]
    client.post("/api/v1/pilots", json={**pilot_body("x", layer="pricing"), "stages": [
        {"store_codes": ["ra0", "rc1"], "allocation": ALLOCATION}]}, headers=running)
    refused = act(client, running, "x", "start")
    assert refused.status_code == 409 and refused.json["error"]["code"] == "overlapping_pilot"
    [other] = refused.json["error"]["details"]["pilots"]
    assert other["pilot"] == "p1" and other["layer"] == "default" and other["stores"] == ["ra0"]
    assert other["customers"] >= 1 and "c0" in other["sample_customers"]
    assert "p1" in refused.json["error"]["message"] and "ra0" in refused.json["error"]["message"]
    assert client.get("/api/v1/pilots/x", headers=running).json["state"] == "draft"
    unknown = client.patch("/api/v1/pilots/x", json={"independent_of": ["nope"]}, headers=running)
    assert unknown.status_code == 422 and "independent_of" in unknown.json["error"]["details"]["fields"]
    assert client.patch("/api/v1/pilots/x", json={"independent_of": ["p1"]}, headers=running).status_code == 200
    assert act(client, running, "x", "start").status_code == 200
    with app.app_context():
        events = {e.action: e for e in db.session.scalars(select(AuditEvent).where(AuditEvent.entity_id == "x"))}
    assert events["overlap_declared_independent"].after["overlaps"][0]["pilot"] == "p1"
    assert events["update"].after["independent_of"] == ["p1"]
    layers = {g["layer"]: g["live_pilots"] for g in client.get("/api/v1/layers", headers=auth("analyst")).json}
    assert [p["pilot"] for p in layers["default"]] == ["p1"] and [p["pilot"] for p in layers["pricing"]] == ["x"]
    assert layers["pricing"][0]["independent_of"] == ["p1"]


def test_advancing_into_an_overlap_is_refused_and_other_kinds_may_share(app, client, running, auth):
    client.post("/api/v1/pilots", json={**pilot_body("y", layer="other"), "stages": [
        {"region_codes": ["rc"], "allocation": ALLOCATION}, {"region_codes": ["rb", "rc"], "allocation": ALLOCATION}]},
        headers=running)
    assert act(client, running, "y", "start").status_code == 200
    widened = act(client, running, "y", "advance", override=True, reason="test: no analysis")
    assert widened.status_code == 409 and widened.json["error"]["code"] == "overlapping_pilot"
    assert widened.json["error"]["details"]["pilots"][0]["stores"][:2] == ["rb0", "rb1"]
    service = {"key": "service", "name": "Service", "variants": [
        {"key": "control", "mechanic": "control"},
        {"key": "delivery", "mechanic": "preferred_service", "parameters": VALID["preferred_service"]}]}
    assert client.post("/api/v1/programmes", json=service, headers=running).status_code == 201
    client.post("/api/v1/pilots", json={**pilot_body("z", layer="service"), "programme": "service", "stages": [
        {"region_codes": ["ra"], "allocation": {"control": 0.5, "delivery": 0.5}}]}, headers=running)
    assert act(client, running, "z", "start").status_code == 200  # another kind of programme


def test_the_pilot_page_shows_the_plan_and_amends_it_with_a_reason(client, running, tokens):
    from tests.factories import csrf, login
    login(client, tokens["manager"])
    page = client.get("/pilots/p1").get_data(as_text=True)
    assert "Analysis plan, version 1" in page
    token = csrf(client, "/pilots/p1")
    bad = client.post("/pilots/p1/analysis-plan/amend", data={"csrf_token": token, "mde": "x", "reason": "r"},
                      follow_redirects=True).get_data(as_text=True)
    assert "Not amended: mde must be a number" in bad
    done = client.post("/pilots/p1/analysis-plan/amend", data={"csrf_token": token, "mde": "3",
                                                                "reason": "Finance asks for 3%"},
                       follow_redirects=True).get_data(as_text=True)
    assert "version 2" in done and "Finance asks for 3%" in done
    assert client.get("/api/v1/pilots/p1", headers=running).json["mde"] == 0.03
