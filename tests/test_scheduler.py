"""The scheduler: analyses, guardrail pauses, stage dates; each job once however many schedulers run."""
from __future__ import annotations

import json
import multiprocessing as mp
from datetime import date, timedelta

import pytest
from sqlalchemy import func, select

from pilot.assignment import assign_bulk, holdout
from pilot.cli import cli
from pilot.db import db
from pilot.models import AnalysisRun, Assignment, AuditEvent, Customer, JobRun
from pilot.rollout import get_pilot
from pilot.scheduler import run_all_once
from tests.factories import plant


def test_scheduler_analyses_and_pauses_a_harmed_pilot(app, client, auth):
    harmed = plant(app, "harmed_guardrail")  # one simulated pilot per database: they share the customers
    out = {r["job"]: r for r in run_all_once(app, 60)}
    assert out["analyse_running"]["ran"] and out["analyse_running"]["status"] == "done"
    detail = out["analyse_running"]["detail"]
    assert set(detail["analysed"]) == {harmed}
    assert [p["pilot"] for p in detail["paused"]] == [harmed] and "spend_per_visit" in detail["paused"][0]["reason"]
    with app.app_context():
        assert get_pilot(db.session, harmed).state == "paused"
        assert db.session.scalar(select(func.count()).select_from(AnalysisRun)) == 1
        assert db.session.scalar(select(AuditEvent.action).where(AuditEvent.entity_id == harmed,
                                                                  AuditEvent.action == "auto_pause")) == "auto_pause"
    # the same slot does not run again
    again = {r["job"]: r for r in run_all_once(app, 60)}
    assert again["analyse_running"]["ran"] is False
    jobs = client.get("/api/v1/jobs", headers=auth("analyst")).json["items"]
    assert sorted(j["job"] for j in jobs) == ["analyse_running", "keep_calendar"]
    assert all(j["status"] == "done" for j in jobs)


def test_calendar_advances_and_completes_at_planned_dates(app):
    key = plant(app, "too_few")
    with app.app_context():
        pilot = get_pilot(db.session, key)
        pilot.stage(1).planned_end = date.today() - timedelta(days=1)
        pilot.stage(2).planned_start = date.today()
        # customers who joined since stage 1 was assigned: the advance must assign them (bulk path)
        like = db.session.scalars(select(Customer).where(Customer.id.in_(
            select(Assignment.customer_id).where(Assignment.pilot_id == pilot.id))).limit(12)).all()
        db.session.add_all(Customer(external_id=f"joined-{i}", home_store_id=c.home_store_id, age_band=c.age_band,
                                    household_size=c.household_size, children=c.children,
                                    attributes=dict(c.attributes)) for i, c in enumerate(like))
        # a gate the stage meets (the calendar holds to the gate: pilot.governance)
        pilot.stage(1).gate = {"min_days": 0, "min_units_per_arm": 1, "require_significant": False, "min_roi": -100,
                               "no_guardrail_harm": False, "no_srm": False}
        db.session.commit()
    results = {r["job"]: r for r in run_all_once(app, 60)}
    assert results["keep_calendar"]["detail"]["advanced"] == [key]
    assert results["analyse_running"]["detail"]["paused"] == []  # nothing harmed: not paused
    with app.app_context():
        pilot = get_pilot(db.session, key)
        assert (pilot.current_stage, pilot.state) == (2, "running")
        # the new scope's customers were assigned by the calendar (bulk path): doing it again adds none
        assigned = results["keep_calendar"]["detail"]["assigned"][key]
        stage2 = db.session.scalar(select(func.count()).select_from(Assignment).where(
            Assignment.pilot_id == pilot.id, Assignment.stage == 2))
        assert assigned["stage"] == 2 and stage2 > 0, assigned
        assert assigned["assigned_now"] == stage2
        assert assign_bulk(db.session, pilot, holdout())["assigned_now"] == 0


def _scheduler(url, barrier, out):
    from pilot import create_app
    app = create_app({"DATABASE_URL": url, "AUTO_MIGRATE": False, "TESTING": True})
    barrier.wait()
    out.put(run_all_once(app, 60))


def test_two_schedulers_run_each_job_once(app, backend):
    if backend[0] != "postgresql":
        pytest.skip("races are checked against PostgreSQL (set PILOT_TEST_DATABASE_URL)")
    plant(app, "too_few")
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_scheduler, args=(app.config["DATABASE_URL"], barrier, out)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    ran = [r["job"] for batch in results for r in batch if r["ran"]]
    assert sorted(ran) == ["analyse_running", "keep_calendar"]
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(AnalysisRun)) == 1
        assert db.session.scalar(select(func.count()).select_from(JobRun)) == 2


def test_scheduler_once_from_the_command_line(app):
    plant(app, "too_few")
    result = app.test_cli_runner().invoke(cli, ["scheduler", "--once", "--interval-minutes", "30"])
    assert result.exit_code == 0, result.output
    assert {r["job"] for r in json.loads(result.output)} == {"recover", "analyse_running", "keep_calendar",
                                                              "deliver_webhooks"}


def test_simulate_command(app):
    result = app.test_cli_runner().invoke(cli, ["simulate", "--scenario", "too_few", "--key", "cli-sim"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["pilot"] == "cli-sim" and out["decision"] == "extend" and out["transactions"] > 0
    bad = app.test_cli_runner().invoke(cli, ["simulate", "--scenario", "nope"])
    assert bad.exit_code == 2
