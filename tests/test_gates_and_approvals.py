"""Gates that hold (409 gate_not_met with numbers, freshness, override with a reason) and second-person
approvals of overrides, advances against the recommendation and roll backs."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from pilot.auth import issue_token
from pilot.db import db, utcnow
from pilot.models import AnalysisRun, AuditEvent
from tests.factories import act, csrf, login, plant


def analyse(client, headers, key="p1"):
    r = client.post(f"/api/v1/pilots/{key}/analyses", json={}, headers=headers)
    assert r.status_code == 201, r.json
    return r.json


def second_manager(app) -> dict[str, str]:
    with app.app_context():
        secret = issue_token(db.session, "second manager", "manager", None)[1]
        db.session.commit()
    return {"Authorization": f"Bearer {secret}"}


def audit(app, action):
    with app.app_context():
        return [(e.actor, e.after) for e in db.session.scalars(select(AuditEvent).where(AuditEvent.action == action))]


def test_advance_and_complete_hold_to_the_gate_until_overridden_with_a_reason(app, client, running, auth):
    none_yet = act(client, running, "p1", "advance")
    assert none_yet.status_code == 409 and none_yet.json["error"]["code"] == "gate_not_met"
    assert [c["condition"] for c in none_yet.json["error"]["details"]["unmet"]] == ["analysis"]
    run = analyse(client, auth("analyst"))
    refused = act(client, running, "p1", "advance")
    assert refused.status_code == 409 and refused.json["error"]["code"] == "gate_not_met"
    unmet = {c["condition"]: c for c in refused.json["error"]["details"]["unmet"]}
    assert unmet["min_days"]["required"] == 14 and unmet["min_days"]["actual"] < 1
    assert "of 14 days run" in refused.json["error"]["message"] and refused.json["error"]["details"]["analysis"] == \
        run["id"]
    assert act(client, running, "p1", "complete").json["error"]["code"] == "gate_not_met"
    no_reason = act(client, running, "p1", "advance", override=True)
    assert no_reason.status_code == 422 and "reason" in no_reason.json["error"]["details"]["fields"]
    gate = client.get("/api/v1/pilots/p1/gate", headers=auth("analyst")).json
    assert gate["met"] is False and gate["analysis"] == run["id"]
    done = act(client, running, "p1", "advance", override=True, reason="Board decision: widen before Christmas")
    assert done.status_code == 200 and done.json["current_stage"] == 2
    [(actor, after)] = audit(app, "override_gate")
    assert actor == "token:2:manager test" and after["reason"] == "Board decision: widen before Christmas"
    assert {c["condition"] for c in after["unmet"]} >= {"min_days"}
    timeline = client.get("/api/v1/pilots/p1/timeline", headers=auth("analyst")).json["items"]
    assert "override_gate" in [e["action"] for e in timeline]


def test_a_stale_analysis_does_not_open_the_gate(app, client, running, auth):
    run = analyse(client, auth("analyst"))
    with app.app_context():
        db.session.execute(update(AnalysisRun).where(AnalysisRun.id == run["id"])
                           .values(cutoff=utcnow() - timedelta(hours=30)))
        db.session.commit()
    unmet = {c["condition"]: c for c in act(client, running, "p1", "advance").json["error"]["details"]["unmet"]}
    assert unmet["fresh_analysis"]["max_age_hours"] == 24 and unmet["fresh_analysis"]["age_hours"] >= 30


def test_a_met_gate_lets_advance_through_and_the_pages_refuse_with_the_reason(app, client, auth, tokens):
    key = plant(app, "clear_win", customers=1500, stores=8, key="win")
    run = analyse(client, auth("manager"), key)
    assert run["decision"] == "advance", run["recommendation"]["summary"]
    assert run["config"]["plan_version"] == 1
    assert client.get(f"/api/v1/pilots/{key}/gate", headers=auth("analyst")).json["met"] is True
    assert act(client, auth("manager"), key, "advance").status_code == 200
    assert not audit(app, "override_gate")
    # the next stage has no fresh analysis: the page flashes the refusal
    login(client, tokens["manager"])
    page = client.post(f"/pilots/{key}/complete", data={"csrf_token": csrf(client, f"/pilots/{key}")},
                       follow_redirects=True).get_data(as_text=True)
    assert "gate" in page and "no finished analysis" in page


def test_second_person_approves_an_override_and_the_requester_cannot(app, client, running, auth):
    assert client.patch("/api/v1/pilots/p1", json={"approval": "second_person"}, headers=running).status_code == 200
    analyse(client, auth("analyst"))
    asked = act(client, running, "p1", "advance", override=True, reason="Regional launch date fixed")
    assert asked.status_code == 202 and asked.json["status"] == "pending" and asked.json["needs"] == ["override", "against_recommendation"]
    assert client.get("/api/v1/pilots/p1", headers=running).json["current_stage"] == 1
    approval = asked.json["id"]
    own = client.post(f"/api/v1/pilots/p1/approvals/{approval}/approve", json={}, headers=running)
    assert own.status_code == 403 and own.json["error"]["code"] == "same_person"
    other = second_manager(app)
    ok = client.post(f"/api/v1/pilots/p1/approvals/{approval}/approve", json={"reason": "Agreed"}, headers=other)
    assert ok.status_code == 200 and ok.json["status"] == "approved" and ok.json["decided_by"].endswith("second manager")
    assert client.get("/api/v1/pilots/p1", headers=running).json["current_stage"] == 2
    [(actor, after)] = audit(app, "override_gate")
    assert actor == "token:2:manager test" and after["approval"] == approval
    assert after["approved_by"].endswith("second manager")
    again = client.post(f"/api/v1/pilots/p1/approvals/{approval}/reject", json={}, headers=other)
    assert again.status_code == 409 and again.json["error"]["code"] == "approval_decided"
    # a roll back waits too, and a rejection leaves the pilot as it is
    back = act(client, running, "p1", "rollback", reason="Margin too thin")
    assert back.status_code == 202 and back.json["needs"] == ["rollback"]
    no = client.post(f"/api/v1/pilots/p1/approvals/{back.json['id']}/reject", json={"reason": "Wait"}, headers=other)
    assert no.status_code == 200 and no.json["status"] == "rejected"
    assert client.get("/api/v1/pilots/p1", headers=running).json["state"] == "running"
    listed = client.get("/api/v1/pilots/p1/approvals", headers=auth("analyst")).json
    assert [a["status"] for a in listed] == ["rejected", "approved"]
    lowered = client.patch("/api/v1/pilots/p1", json={"approval": "none"}, headers=running)
    assert lowered.status_code == 409 and lowered.json["error"]["code"] == "approval_locked"


def test_the_pages_ask_for_and_show_approvals_and_refuse_an_overlap(app, client, running, auth, tokens):
    from tests.factories import pilot_body
    client.patch("/api/v1/pilots/p1", json={"approval": "second_person"}, headers=running)
    client.post("/api/v1/pilots", json={**pilot_body("x", layer="pricing"), "stages": [
        {"store_codes": ["ra0"], "allocation": {"control": 0.5, "discount": 0.5}}]}, headers=running)
    login(client, tokens["manager"])
    token = csrf(client, "/pilots/p1")
    page = client.post("/pilots/x/start", data={"csrf_token": token}, follow_redirects=True).get_data(as_text=True)
    assert "overlap" in page and "p1" in page and "ra0" in page
    asked = client.post("/pilots/p1/rollback", data={"csrf_token": token, "reason": "Margin too thin"},
                        follow_redirects=True).get_data(as_text=True)
    assert "waits for a second person" in asked and "Waiting for a second person" in asked
    assert "Margin too thin" in asked
    [approval] = client.get("/api/v1/pilots/p1/approvals", headers=running).json
    own = client.post(f"/pilots/p1/approvals/{approval['id']}/approve", data={"csrf_token": token},
                      follow_redirects=True).get_data(as_text=True)
    assert "A second person must decide" in own
    client.post("/logout", data={"csrf_token": token})
    login(client, tokens["admin"])
    token = csrf(client, "/pilots/p1")
    done = client.post(f"/pilots/p1/approvals/{approval['id']}/approve", data={"csrf_token": token},
                       follow_redirects=True).get_data(as_text=True)
    assert "approved" in done and client.get("/api/v1/pilots/p1", headers=running).json["state"] == "rolled_back"
