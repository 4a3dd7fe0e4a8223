"""The synthetic retailer's events (what `pilot demo` loads): every generated event stored through the feed's
path, and the planted lift seen in the raw rows of the pilot weeks."""
from __future__ import annotations

import random
from datetime import timedelta

from sqlalchemy import func, select

from pilot.db import db
from pilot.models import Assignment, CustomerEvent, IngestionBatch, Pilot
from pilot.synthetic_events import events_history
from tests.factories import NOW, plant


def test_planted_app_session_lift_and_nps_shift_show_in_the_raw_rows(app):
    key = plant(app, "clear_win", customers=600, stores=12)
    with app.app_context():
        pilot = db.session.scalar(select(Pilot).filter_by(key=key))
        start = pilot.started_at
        accepted = events_history(db.session, pilot.id, random.Random(3), start - timedelta(weeks=8), start, NOW,
                                  {"bonus": {"app_session": 2.0, "nps": 3.0}})
        db.session.commit()
        assert accepted == db.session.scalar(select(func.count()).select_from(CustomerEvent)) > 1000
        assert db.session.scalar(select(IngestionBatch.kind).order_by(IngestionBatch.id.desc()).limit(1)) == "events"
        rows = db.session.execute(select(Assignment.variant, CustomerEvent.type, CustomerEvent.value,
                                         CustomerEvent.occurred_at >= start)
                                  .join(Assignment, Assignment.customer_id == CustomerEvent.customer_id)).all()
        arms = dict(db.session.execute(select(Assignment.variant, func.count()).where(Assignment.pilot_id == pilot.id)
                                       .group_by(Assignment.variant)).all())
    per_customer = {arm: sum(1 for a, t, _v, post in rows if a == arm and t == "app_session" and post) / n
                    for arm, n in arms.items()}
    assert per_customer["bonus"] > 2.2 * per_customer["control"]  # planted: three times the rate
    answers = {arm: [v for a, t, v, post in rows if a == arm and t == "survey_nps" and post] for arm in arms}
    assert all(0 <= v <= 10 for vs in answers.values() for v in vs)
    mean = {arm: sum(vs) / len(vs) for arm, vs in answers.items()}
    assert mean["bonus"] - mean["control"] > 1.5  # planted: +3 points, cut at 10
