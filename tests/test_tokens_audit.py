"""Tokens: created once, stored hashed, revocable; every change audited in its own transaction."""
from sqlalchemy import select

from pilot.auth import hash_token
from pilot.db import db
from pilot.models import ApiToken, AuditEvent


def test_create_use_revoke(app, client, admin):
    made = client.post("/api/v1/tokens", json={"name": "pos feed", "role": "feed"}, headers=admin)
    assert made.status_code == 201
    secret = made.json["token"]
    with app.app_context():
        stored = db.session.get(ApiToken, made.json["id"])
        assert stored.token_hash == hash_token(secret) and secret not in (stored.token_hash, stored.prefix)
    feed = {"Authorization": f"Bearer {secret}"}
    assert client.get("/api/v1/me", headers=feed).json["role"] == "feed"
    listed = client.get("/api/v1/tokens?limit=100", headers=admin).json["items"]
    assert all("token" not in t for t in listed) and any(t["name"] == "pos feed" for t in listed)
    assert client.delete(f"/api/v1/tokens/{made.json['id']}", headers=admin).json["revoked_at"]
    assert client.get("/api/v1/me", headers=feed).status_code == 401


def test_store_token_needs_a_store(client, admin):
    r = client.post("/api/v1/tokens", json={"name": "s", "role": "store"}, headers=admin)
    assert r.status_code == 422 and "store" in r.json["error"]["details"]["fields"]
    r = client.post("/api/v1/tokens", json={"name": "s", "role": "admin", "store": "T001"}, headers=admin)
    assert r.status_code == 422
    r = client.post("/api/v1/tokens", json={"name": "s", "role": "store", "store": "NOPE"}, headers=admin)
    assert r.status_code == 404
    r = client.post("/api/v1/tokens", json={"name": "s", "role": "root"}, headers=admin)
    assert r.status_code == 422


def test_audit_records_before_and_after_with_actor(client, admin, auth):
    client.post("/api/v1/regions", json={"code": "r9", "name": "Nine"}, headers=auth("manager"))
    client.patch("/api/v1/regions/r9", json={"name": "Niner"}, headers=auth("manager"))
    client.delete("/api/v1/regions/r9", headers=auth("manager"))
    events = client.get("/api/v1/audit?entity_type=region&entity_id=r9", headers=admin).json["items"]
    assert [e["action"] for e in events] == ["create", "update", "delete"]
    assert events[1]["before"] == {"code": "r9", "name": "Nine"} and events[1]["after"]["name"] == "Niner"
    assert all(e["actor"].endswith("manager test") for e in events)
    only_updates = client.get("/api/v1/audit?action=update&entity_type=region", headers=admin).json["items"]
    assert len(only_updates) == 1


def test_failed_change_writes_no_audit_event(app, client, auth):
    r = client.post("/api/v1/stores", json={"code": "Z1", "name": "z", "region": "nowhere"}, headers=auth("manager"))
    assert r.status_code == 422
    with app.app_context():
        assert db.session.scalars(select(AuditEvent).where(AuditEvent.entity_id == "Z1")).all() == []


def test_audit_time_filters(client, admin):
    client.post("/api/v1/regions", json={"code": "r8", "name": "Eight"}, headers=admin)
    assert client.get("/api/v1/audit?since=2000-01-01T00:00:00Z", headers=admin).json["items"]
    assert client.get("/api/v1/audit?until=2000-01-01T00:00:00Z", headers=admin).json["items"] == []
    assert client.get("/api/v1/audit?since=yesterday", headers=admin).status_code == 422


def test_last_use_is_recorded_at_most_once_a_minute(app, client, admin, monkeypatch):
    made = client.post("/api/v1/tokens", json={"name": "till", "role": "analyst"}, headers=admin).json
    assert made["last_used_at"] is None
    analyst = {"Authorization": f"Bearer {made['token']}"}
    assert client.get("/api/v1/me", headers=analyst).status_code == 200

    def stored():
        with app.app_context():
            return db.session.get(ApiToken, made["id"]).last_used_at
    first = stored()
    assert first is not None
    shown = client.get(f"/api/v1/tokens/{made['id']}", headers=admin).json["last_used_at"]
    assert shown.startswith(first.strftime("%Y-%m-%dT%H:%M:%S"))
    assert client.get("/api/v1/me", headers=analyst).status_code == 200
    assert stored() == first  # within the minute: no second write
    monkeypatch.setattr("pilot.auth.TOUCH_SECONDS", 0)
    assert client.get("/api/v1/me", headers=analyst).status_code == 200
    assert stored() > first
    # a refused token records nothing
    client.delete(f"/api/v1/tokens/{made['id']}", headers=admin)
    before = stored()
    assert client.get("/api/v1/me", headers=analyst).status_code == 401
    assert stored() == before
