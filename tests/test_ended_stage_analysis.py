"""A stage that has ended is analysed up to its end: an ended store pilot still counts the stores that
stayed to the end (ending it withdraws them at that moment), and a cut-off past the end is
brought back to it."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from pilot import analysis_runs
from pilot.auth import CLI
from pilot.db import db
from pilot.models import Enrolment
from pilot.rollout import get_pilot, transition
from tests.factories import store_pilot


def _run(s, key, cutoff=None):
    run = analysis_runs.create_run(s, CLI.actor, get_pilot(s, key), cutoff=cutoff)
    analysis_runs.execute(s, run)
    s.commit()
    return run


def test_an_ended_store_pilot_is_analysed_with_every_store_that_stayed(app):
    key = store_pilot(app)
    with app.app_context():
        s = db.session
        pilot = get_pilot(s, key)
        stores = s.scalar(select(func.count()).select_from(Enrolment).where(Enrolment.pilot_id == pilot.id))
        live = _run(s, key)
        assert sum(live.results["srm"]["observed"]) == stores > 0
        transition(s, CLI.actor, pilot, "cancel")
        s.commit()
        end = pilot.stage(1).ended_at
        after = _run(s, key)
        assert after.cutoff == end
        assert after.status == "done" and after.results["srm"]["observed"] == live.results["srm"]["observed"]
        later = _run(s, key, cutoff=end + timedelta(days=30))
        assert later.cutoff == end
        assert later.results["srm"]["observed"] == live.results["srm"]["observed"]
