"""The synthetic retailer's customer events (#25): app sessions, NPS answers, referrals, complaints opened and
resolved, points redeemed, over the pre-period and the pilot, with planted effects per arm, ingested
through the one ingestion path (pilot.ingestion with pilot.events_feed.EVENTS)."""
from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pilot.auth import CLI
from pilot.events_feed import EVENTS
from pilot.ingestion import Ingest
from pilot.models import Assignment, Customer
from pilot.simulate import _poisson

# weekly rates per customer (app sessions only for the app users, half of the customers)
RATES = {"app_session": 0.2, "referral": 0.02, "points_redeemed": 0.03, "complaint_opened": 0.006}
SURVEY_SHARE = 0.35  # of customers answering the NPS survey once in each period
RESOLVED_SHARE = 0.8  # of complaints resolved, a few days later


def events_history(session: Session, pilot_id: int, rng: random.Random, first: datetime, start: datetime,
                   now: datetime, effects: dict[str, dict[str, float]], source: str = "sim-events") -> int:
    """Generate the events of the pilot's customers from `first` to `now` (the pilot started at `start`) and ingest
    them; `effects`: per arm, a relative lift of an event type's rate in the pilot ("app_session": 0.3)
    and "nps": points added to the answers. The rows accepted."""
    ingest = Ingest(session, CLI.actor, "cli", source=source, kind=EVENTS)
    ingest.add_all(_events(session, pilot_id, rng, first, start, now, effects))
    return ingest.finish().accepted


def _events(session: Session, pilot_id: int, rng: random.Random, first: datetime, start: datetime, now: datetime,
            effects: dict[str, dict[str, float]]) -> Iterator[tuple[int, dict[str, Any]]]:
    customers = session.execute(
        select(Customer.external_id, Assignment.variant)
        # the pilot's customers only: the demo stays quick to load
        .join(Assignment, (Assignment.customer_id == Customer.id) & (Assignment.pilot_id == pilot_id))
        .order_by(Customer.id)).all()
    number = 0
    for external_id, variant in customers:
        effect = effects.get(variant or "", {})
        app_user = rng.random() < 0.5
        satisfaction = rng.gauss(7.4, 1.7)
        pieces = []
        for period_start, period_end, post in ((first, start, False), (start, now, True)):
            weeks = (period_end - period_start).total_seconds() / (7 * 86400)
            for kind, rate in RATES.items():
                if kind == "app_session" and not app_user:
                    continue
                lift = effect.get(kind, 0.0) if post else 0.0
                for _ in range(_poisson(rng, rate * weeks * (1 + lift))):
                    pieces.append((kind, _moment(rng, period_start, period_end), None))
            if rng.random() < SURVEY_SHARE:
                score = satisfaction + rng.gauss(0, 1.2) + (effect.get("nps", 0.0) if post else 0.0)
                pieces.append(("survey_nps", _moment(rng, period_start, period_end), min(10, max(0, round(score)))))
        for kind, when, value in sorted(pieces, key=lambda p: p[1]):
            if kind == "complaint_opened" and rng.random() < RESOLVED_SHARE:
                pieces_at = when + timedelta(days=rng.uniform(0.5, 6))
                if pieces_at < now:
                    number += 1
                    yield number, _row(number, external_id, "complaint_resolved", pieces_at, None)
            if when < now:
                number += 1
                yield number, _row(number, external_id, kind, when, value)


def _row(number: int, customer: str, kind: str, when: datetime, value: int | None) -> dict[str, Any]:
    channel = "app" if kind == "app_session" else "survey" if value is not None else "crm"
    row: dict[str, Any] = {"event_id": f"ev-{number}", "customer": customer, "type": kind,
                           "occurred_at": when.isoformat(), "attributes": {"channel": channel}}
    if value is not None:
        row["value"] = value
    return row


def _moment(rng: random.Random, lo: datetime, hi: datetime) -> datetime:
    return lo + timedelta(seconds=rng.uniform(0, max((hi - lo).total_seconds(), 1)))

