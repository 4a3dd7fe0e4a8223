"""Webhooks: events into an outbox in the caller's transaction, delivered by the scheduler, signed.

`emit` adds one `webhook_deliveries` row per webhook that takes the event, in the transaction of the
change it announces (an event is queued if and only if the change commits). `deliver_due` claims due
rows with a lease (a compare-and-set UPDATE, so two schedulers, or one restarted, never send a row
twice while it is leased or after it is delivered), sends each outside any transaction, and records
the attempt: delivered, or retried after 30 s · 2^(attempt−1) up to MAX_ATTEMPTS, then failed.

A request is `POST <url>` with the JSON body `{"id", "event", "created_at", "text", "data"}` (`text` is
what Slack and Teams incoming webhooks show) and the headers `X-Pilot-Event`, `X-Pilot-Delivery` (the
delivery's id: the same on every attempt, to drop a repeat after a crash mid-send), `X-Pilot-Timestamp`
(Unix seconds) and `X-Pilot-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`. The
secret is derived from the app's secret key and the webhook's salt (never stored); it is shown once.
A `mailto:` URL sends the text by e-mail through PILOT_SMTP_HOST instead.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import smtplib
import time
import urllib.error
import urllib.request
import uuid
from datetime import timedelta
from email.message import EmailMessage
from typing import Any

from flask import current_app
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from pilot.audit import record
from pilot.db import utcnow
from pilot.errors import Invalid, NotFound
from pilot.leases import worker_id
from pilot.models import Webhook, WebhookDelivery

EVENTS = ("analysis.completed", "recommendation.changed", "pilot.paused", "pilot.advanced", "approval.requested",
          "arm.dropped")
MAX_ATTEMPTS = 6
BACKOFF_SECONDS = 30.0
LEASE_SECONDS = 60
TIMEOUT_SECONDS = 10


def secret_for(webhook: Webhook) -> str:
    """The webhook's signing secret (derived, never stored)."""
    key = current_app.config["SECRET_KEY"].encode()
    return "whsec_" + hmac.new(key, f"webhook:{webhook.secret_salt}".encode(), hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The X-Pilot-Signature value of a body sent at `timestamp`."""
    return "sha256=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def webhook_dict(w: Webhook) -> dict[str, Any]:
    """A webhook as plain data (never its secret)."""
    return {"id": w.id, "url": w.url, "events": w.events, "description": w.description,
            "disabled_at": w.disabled_at}


def _checked(data: dict[str, Any]) -> dict[str, Any]:
    url = data.get("url")
    if url is not None:
        mail = url.startswith("mailto:")
        if not (url.startswith(("http://", "https://")) or mail) or len(url) < 10:
            raise Invalid("url must be an http(s) URL or mailto:<address>.", details={"fields": {"url": ["Bad URL."]}})
        if mail and not current_app.config.get("SMTP_HOST"):
            raise Invalid("A mailto: webhook needs PILOT_SMTP_HOST.", details={"fields": {"url": ["No SMTP server."]}})
    events = data.get("events")
    if events is not None:
        unknown = sorted(set(events) - set(EVENTS))
        if unknown or not events:
            message = f"events are some of {', '.join(EVENTS)}" + (f" (unknown: {', '.join(unknown)})." if unknown
                                                                   else ".")
            raise Invalid(message, details={"fields": {"events": [message]}})
    return data


def create_webhook(session: Session, actor: str, data: dict[str, Any]) -> tuple[Webhook, str]:
    """A new webhook, audited; its secret is returned once."""
    _checked(data)
    webhook = Webhook(url=data["url"], events=sorted(set(data["events"])), description=data.get("description"),
                      secret_salt=secrets.token_hex(16), created_by=actor)
    session.add(webhook)
    session.flush()
    record(session, actor, "create", "webhook", webhook.id, after=webhook_dict(webhook))
    return webhook, secret_for(webhook)


def update_webhook(session: Session, actor: str, webhook: Webhook, data: dict[str, Any]) -> Webhook:
    """Change a webhook's URL, events, description or whether it is disabled, audited."""
    _checked(data)
    before = webhook_dict(webhook)
    for key in ("url", "description"):
        if key in data:
            setattr(webhook, key, data[key])
    if "events" in data:
        webhook.events = sorted(set(data["events"]))
    if "disabled" in data:
        webhook.disabled_at = (webhook.disabled_at or utcnow()) if data["disabled"] else None
    session.flush()
    record(session, actor, "update", "webhook", webhook.id, before=before, after=webhook_dict(webhook))
    return webhook


def delete_webhook(session: Session, actor: str, webhook: Webhook) -> None:
    """Delete a webhook with its delivery log, audited."""
    record(session, actor, "delete", "webhook", webhook.id, before=webhook_dict(webhook))
    session.query(WebhookDelivery).filter(WebhookDelivery.webhook_id == webhook.id).delete()
    session.delete(webhook)


def get_webhook(session: Session, webhook_id: int) -> Webhook:
    """The webhook with the id, or a 404."""
    webhook = session.get(Webhook, webhook_id)
    if webhook is None:
        raise NotFound(f"No webhook {webhook_id}.")
    return webhook


def emit(session: Session, event: str, data: dict[str, Any], text: str) -> list[WebhookDelivery]:
    """Queue the event for every live webhook that takes it, in the caller's transaction."""
    from pilot.audit import _jsonable
    out = []
    for webhook in session.scalars(select(Webhook).where(Webhook.disabled_at.is_(None)).order_by(Webhook.id)):
        if event not in webhook.events:
            continue
        payload = {"id": str(uuid.uuid4()), "event": event, "created_at": utcnow().isoformat(),
                   "text": f"[Pilot] {text}", "data": _jsonable(data)}
        out.append(WebhookDelivery(webhook_id=webhook.id, event=event, payload=payload, status="pending",
                                   attempts=0, attempt_log=[], next_attempt_at=utcnow()))
    session.add_all(out)
    return out


def _claim(session: Session, delivery_id: int, worker: str) -> bool:
    now = utcnow()
    won = session.execute(update(WebhookDelivery).where(
        WebhookDelivery.id == delivery_id, WebhookDelivery.status == "pending",
        or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until < now))
        .values(lease_until=now + timedelta(seconds=LEASE_SECONDS), worker=worker),
        execution_options={"synchronize_session": False})
    session.commit()
    return won.rowcount == 1


def deliver_due(session: Session, limit: int = 100) -> dict[str, Any]:
    """Send the due deliveries (each claimed under a lease first); what was delivered, retried, failed."""
    worker, now = worker_id(), utcnow()
    due = list(session.scalars(select(WebhookDelivery.id).where(
        WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now,
        or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until < now))
        .order_by(WebhookDelivery.id).limit(limit)))
    session.commit()
    out: dict[str, list[int]] = {"delivered": [], "retry": [], "failed": []}
    for delivery_id in due:
        if not _claim(session, delivery_id, worker):
            continue  # another scheduler has it
        delivery = session.get(WebhookDelivery, delivery_id, populate_existing=True)
        message = _message(session.get(Webhook, delivery.webhook_id), delivery)
        session.commit()  # no transaction stays open while the request is out
        outcome = _send(message)
        delivery = session.get(WebhookDelivery, delivery_id)
        out[_record_attempt(delivery, outcome)].append(delivery.id)
        session.commit()
    return out


def _message(webhook: Webhook | None, delivery: WebhookDelivery) -> dict[str, Any]:
    """What one attempt sends, as plain data (read before the transaction ends)."""
    live = webhook is not None and webhook.disabled_at is None
    return {"id": delivery.id, "event": delivery.event, "payload": delivery.payload, "live": live,
            "url": webhook.url if live else None, "secret": secret_for(webhook) if live else None}


def _record_attempt(delivery: WebhookDelivery, outcome: dict[str, Any]) -> str:
    now = utcnow()
    delivery.attempts += 1
    delivery.attempt_log = [*delivery.attempt_log, {"at": now.isoformat(), "attempt": delivery.attempts, **outcome}]
    delivery.lease_until = None
    if outcome["ok"]:
        delivery.status, delivery.delivered_at = "delivered", now
        return "delivered"
    if delivery.attempts >= MAX_ATTEMPTS:
        delivery.status = "failed"
        return "failed"
    delivery.next_attempt_at = now + timedelta(seconds=backoff(delivery.attempts))
    return "retry"


def backoff(attempts: int) -> float:
    """Seconds before the next attempt after `attempts` failed ones (exponential)."""
    seconds = current_app.config.get("WEBHOOK_BACKOFF_SECONDS", BACKOFF_SECONDS)
    return float(seconds) * 2 ** (attempts - 1)


def _send(message: dict[str, Any]) -> dict[str, Any]:
    """One attempt: {"ok", "status", "error", "ms"}."""
    started = time.perf_counter()
    if not message["live"]:
        return {"ok": False, "status": None, "error": "webhook disabled or deleted", "ms": 0}
    try:
        status = _mail(message) if message["url"].startswith("mailto:") else _post(message)
        ok, error = 200 <= status < 300, None if 200 <= status < 300 else f"HTTP {status}"
    except (OSError, smtplib.SMTPException, ValueError) as exc:
        status, ok, error = None, False, f"{type(exc).__name__}: {exc}"[:500]
    return {"ok": ok, "status": status, "error": error, "ms": round((time.perf_counter() - started) * 1000, 1)}


def _post(message: dict[str, Any]) -> int:
    body = json.dumps(message["payload"], separators=(",", ":")).encode()
    timestamp = int(time.time())
    request = urllib.request.Request(message["url"], data=body, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": "Pilot-Webhooks/1", "X-Pilot-Event": message["event"],
        "X-Pilot-Delivery": str(message["id"]), "X-Pilot-Timestamp": str(timestamp),
        "X-Pilot-Signature": sign(message["secret"], timestamp, body)})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _mail(message: dict[str, Any]) -> int:
    """Send the event's text by e-mail (PILOT_SMTP_*); 250 when the server took it."""
    config, payload = current_app.config, message["payload"]
    mail = EmailMessage()
    mail["From"] = config.get("SMTP_FROM") or "pilot@localhost"
    mail["To"] = message["url"].removeprefix("mailto:")
    mail["Subject"] = f"[Pilot] {message['event']}"
    mail.set_content(payload["text"] + "\n\n" + json.dumps(payload["data"], indent=2))
    with smtplib.SMTP(config["SMTP_HOST"], int(config.get("SMTP_PORT") or 25), timeout=TIMEOUT_SECONDS) as smtp:
        if config.get("SMTP_STARTTLS"):
            smtp.starttls()
        if config.get("SMTP_USER"):
            smtp.login(config["SMTP_USER"], config.get("SMTP_PASSWORD") or "")
        smtp.send_message(mail)
    return 250
