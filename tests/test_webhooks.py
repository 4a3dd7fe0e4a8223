"""Webhooks: signed deliveries to a receiver on localhost, retries with backoff, a delivery log, nothing
sent twice after a scheduler restart; the events the service emits; e-mail through a local SMTP server."""
from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import update

from pilot import create_app
from pilot.db import db, utcnow
from pilot.models import AnalysisRun, WebhookDelivery
from pilot.scheduler import run_all_once
from tests.factories import act


class Receiver:
    """A local HTTP server that answers each request with the next status of `statuses` (then 200)."""

    def __init__(self, statuses=()):
        self.requests, self.statuses = [], list(statuses)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                self.send_response(receiver.statuses.pop(0) if receiver.statuses else 200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(statuses=()):
        made.append(Receiver(statuses))
        return made[-1]
    yield make
    for r in made:
        r.close()


def hook(client, admin, url, events):
    r = client.post("/api/v1/webhooks", json={"url": url, "events": events}, headers=admin)
    assert r.status_code == 201, r.json
    return r.json


def deliveries(client, admin, webhook):
    return client.get(f"/api/v1/webhooks/{webhook['id']}/deliveries", headers=admin).json["items"]


def test_webhooks_are_checked_and_admin_only(client, admin, auth):
    bad = client.post("/api/v1/webhooks", json={"url": "http://x.example/h", "events": ["pilot.exploded"]},
                      headers=admin)
    assert bad.status_code == 422 and "events" in json.dumps(bad.json["error"]["details"])
    url = client.post("/api/v1/webhooks", json={"url": "ftp://x.example/h", "events": ["pilot.paused"]}, headers=admin)
    assert url.status_code == 422 and "url" in url.json["error"]["details"]["fields"]
    mail = client.post("/api/v1/webhooks", json={"url": "mailto:ops@example.com", "events": ["pilot.paused"]},
                       headers=admin)
    assert mail.status_code == 422 and "PILOT_SMTP_HOST" in mail.json["error"]["message"]
    assert client.get("/api/v1/webhooks", headers=auth("manager")).status_code == 403
    made = hook(client, admin, "https://hooks.example.com/x", ["pilot.paused"])
    assert made["secret"].startswith("whsec_")
    assert "secret" not in client.get(f"/api/v1/webhooks/{made['id']}", headers=admin).json
    off = client.patch(f"/api/v1/webhooks/{made['id']}", json={"disabled": True}, headers=admin)
    assert off.status_code == 200 and off.json["disabled_at"]
    assert client.delete(f"/api/v1/webhooks/{made['id']}", headers=admin).status_code == 204


def test_signed_delivery_with_retries_and_no_repeat_after_a_restart(app, client, running, admin, receiver,
                                                                    database_url):
    app.config["WEBHOOK_BACKOFF_SECONDS"] = 0  # retries due at once (the default backoff is 30 s · 2^n)
    target = receiver(statuses=[500, 503])
    made = hook(client, admin, target.url, ["pilot.paused", "pilot.advanced"])
    assert act(client, running, "p1", "pause").status_code == 200
    for _ in range(3):  # two failures, then the receiver takes it
        run_all_once(app, 60)
    [delivery] = deliveries(client, admin, made)
    assert delivery["status"] == "delivered" and delivery["attempts"] == 3
    assert [a["status"] for a in delivery["attempt_log"]] == [500, 503, 200]
    assert len(target.requests) == 3 and len({h["X-Pilot-Delivery"] for h, _ in target.requests}) == 1
    headers, body = target.requests[-1]
    expected = hmac.new(made["secret"].encode(), headers["X-Pilot-Timestamp"].encode() + b"." + body,
                        hashlib.sha256).hexdigest()
    assert headers["X-Pilot-Signature"] == f"sha256={expected}" and headers["X-Pilot-Event"] == "pilot.paused"
    payload = json.loads(body)
    assert payload["event"] == "pilot.paused" and payload["data"]["pilot"] == "p1"
    assert payload["text"].startswith("[Pilot] Pilot p1 paused") and "token:2:manager test" in payload["text"]
    # a restarted scheduler (a new app on the same database) sends nothing again
    restarted = create_app({"TESTING": True, "DATABASE_URL": database_url, "AUTO_MIGRATE": False,
                            "SECRET_KEY": "test-secret"})
    run_all_once(restarted, 60)
    assert len(target.requests) == 3
    # a delivery leased by a scheduler that died mid-send waits for its lease; then it goes once
    act(client, running, "p1", "resume")
    act(client, running, "p1", "pause")
    with app.app_context():
        db.session.execute(update(WebhookDelivery).where(WebhookDelivery.status == "pending")
                           .values(lease_until=utcnow() + timedelta(seconds=60), worker="dead:1"))
        db.session.commit()
    run_all_once(restarted, 60)
    assert len(target.requests) == 3
    with app.app_context():
        db.session.execute(update(WebhookDelivery).where(WebhookDelivery.status == "pending")
                           .values(lease_until=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    run_all_once(restarted, 60)
    run_all_once(app, 60)
    assert len(target.requests) == 4
    with restarted.app_context():
        db.engine.dispose()


def test_analysis_recommendation_and_approval_events(app, client, running, admin, auth):
    made = hook(client, admin, "http://127.0.0.1:9/unused", ["analysis.completed", "recommendation.changed",
                                                             "approval.requested"])
    first = client.post("/api/v1/pilots/p1/analyses", json={}, headers=auth("analyst")).json
    with app.app_context():  # as if the earlier look had said something else
        db.session.execute(update(AnalysisRun).where(AnalysisRun.id == first["id"]).values(decision="advance"))
        db.session.commit()
    second = client.post("/api/v1/pilots/p1/analyses", json={}, headers=auth("analyst")).json
    client.patch("/api/v1/pilots/p1", json={"approval": "second_person"}, headers=running)
    assert act(client, running, "p1", "rollback", reason="Too costly").status_code == 202
    events = [(d["event"], d["payload"]["data"].get("run")) for d in deliveries(client, admin, made)]
    assert events[:3] == [("analysis.completed", first["id"]), ("analysis.completed", second["id"]),
                          ("recommendation.changed", second["id"])]
    assert events[3][0] == "approval.requested"
    changed = deliveries(client, admin, made)[2]["payload"]
    assert changed["data"]["previous"] == "advance" and "changed from advance to" in changed["text"]


def test_mailto_webhooks_go_through_smtp(app, client, running, admin):
    pytest.importorskip("aiosmtpd")
    from aiosmtpd.controller import Controller

    class Inbox:
        def __init__(self):
            self.messages = []

        async def handle_DATA(self, server, session, envelope):
            self.messages.append((envelope.rcpt_tos, envelope.content.decode()))
            return "250 OK"

    inbox = Inbox()
    with socket.socket() as probe:  # a free port (the controller checks its server by connecting to it)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        app.config.update(SMTP_HOST="127.0.0.1", SMTP_PORT=port,
                          SMTP_FROM="pilot@retailer.example")
        made = hook(client, admin, "mailto:ops@retailer.example", ["pilot.paused"])
        act(client, running, "p1", "pause")
        run_all_once(app, 60)
        [(to, content)] = inbox.messages
        assert to == ["ops@retailer.example"] and "Subject: [Pilot] pilot.paused" in content
        assert "Pilot p1 paused" in content
        assert deliveries(client, admin, made)[0]["status"] == "delivered"
    finally:
        controller.stop()
    assert client.get("/api/v1/webhooks/999/deliveries", headers=admin).status_code == 404
