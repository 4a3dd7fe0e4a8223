"""`pilot scheduler`: APScheduler in its own process, with each job firing claimed in the database.

Every job firing has a slot (the job's interval number since the epoch). A scheduler runs a job
only after inserting (job, slot) into `job_runs`; the unique constraint lets exactly one of two
schedulers win the insert (ON CONFLICT DO NOTHING), so a job runs once however many are up.
Jobs: re-analyse running pilots; pause a running pilot whose guardrail is harmed by the sequential
test (valid under daily looks); start and end stages at their planned dates.
"""
from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from flask import Flask
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from pilot import rollout, runs
from pilot.audit import record
from pilot.db import db, utcnow
from pilot.models import JobRun, Pilot

log = logging.getLogger(__name__)
ACTOR = "scheduler"
CALENDAR_MINUTES = 60
WORKER = f"{socket.gethostname()}:{os.getpid()}"


def claim(session: Session, job: str, slot: str) -> JobRun | None:
    """Insert (job, slot); the winner gets the row, everyone else None."""
    insert = (postgresql if session.bind.dialect.name == "postgresql" else sqlite).insert(JobRun)
    stmt = insert.values(job=job, slot=slot, status="running", worker=WORKER, detail={}, started_at=utcnow()) \
        .on_conflict_do_nothing(index_elements=["job", "slot"]).returning(JobRun.id)
    job_id = session.execute(stmt).scalar()
    session.commit()
    return session.get(JobRun, job_id) if job_id is not None else None


def slot_for(minutes: float, now: datetime | None = None) -> str:
    """The interval number since the epoch: every scheduler computes the same slot for the same firing."""
    now = now or datetime.now(timezone.utc)
    return str(int(now.timestamp() // (minutes * 60)))


def run_job(app: Flask, job: str, minutes: float, fn: Callable[[Session], dict[str, Any]]) -> dict[str, Any]:
    """Run the job once for the current slot if this process wins the claim."""
    with app.app_context():
        session = db.session
        run = claim(session, job, slot_for(minutes))
        if run is None:
            return {"job": job, "ran": False}
        try:
            detail = fn(session)
            run.status, run.detail = "done", detail
        except Exception as exc:  # noqa: BLE001 - recorded on the job run, the scheduler keeps going
            session.rollback()
            run = session.get(JobRun, run.id)
            run.status, run.detail = "failed", {"error": f"{type(exc).__name__}: {exc}"[:2000]}
            log.exception("job %s failed", job)
        run.finished_at = utcnow()
        session.commit()
        return {"job": job, "ran": True, "status": run.status, "detail": run.detail}


def _running(session: Session) -> list[Pilot]:
    return list(session.scalars(select(Pilot).where(Pilot.state == "running").order_by(Pilot.id)))


def analyse_running(session: Session) -> dict[str, Any]:
    """Analyse every running pilot's current stage; pause those whose guardrail is harmed."""
    done, paused = {}, []
    for key in [p.key for p in _running(session)]:
        pilot = session.scalar(select(Pilot).where(Pilot.key == key))
        try:
            run = runs.create_run(session, ACTOR, pilot)
            runs.execute(session, run)
        except Exception as exc:  # noqa: BLE001 - one pilot's failure must not stop the others
            session.rollback()
            log.exception("analysis of %s failed", key)
            done[key] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            continue
        done[pilot.key] = {"run": run.id, "decision": run.decision}
        harmed = [r for r in run.results.get("metrics", []) if r.get("harmed_sequential")]
        if harmed:
            reason = "; ".join(f"guardrail {r['metric']} harmed in {r['arm']} (sequential CI "
                               f"{r['seq_ci_rel_low']:+.1%} to {r['seq_ci_rel_high']:+.1%}, tolerated "
                               f"{r['max_harm']:.1%})" for r in harmed)
            rollout.transition(session, ACTOR, pilot, "pause")
            record(session, ACTOR, "auto_pause", "pilot", pilot.key, after={"run": run.id, "reason": reason})
            paused.append({"pilot": pilot.key, "reason": reason})
        session.commit()
    return {"analysed": done, "paused": paused}


def keep_calendar(session: Session) -> dict[str, Any]:
    """Start drafts whose first stage is due, advance or complete running pilots whose stage ended."""
    today = utcnow().date()
    started, advanced, completed = [], [], []
    for pilot in session.scalars(select(Pilot).where(Pilot.state == "draft").order_by(Pilot.id)):
        first = pilot.stage(1)
        if first is not None and first.planned_start is not None and first.planned_start <= today:
            rollout.transition(session, ACTOR, pilot, "start")
            started.append(pilot.key)
    for pilot in _running(session):
        stage = pilot.stage(pilot.current_stage)
        if stage is None or stage.planned_end is None or stage.planned_end >= today:
            continue
        nxt = pilot.stage(stage.position + 1)
        if nxt is None:
            rollout.transition(session, ACTOR, pilot, "complete")
            completed.append(pilot.key)
        elif nxt.planned_start is None or nxt.planned_start <= today:
            rollout.transition(session, ACTOR, pilot, "advance")
            advanced.append(pilot.key)
    session.commit()
    return {"started": started, "advanced": advanced, "completed": completed}


JOBS = {"analyse_running": analyse_running, "keep_calendar": keep_calendar}


def run_all_once(app: Flask, minutes: float) -> list[dict[str, Any]]:
    """Every job for the current slot (what one scheduler tick does)."""
    return [run_job(app, name, minutes if name == "analyse_running" else CALENDAR_MINUTES, fn)
            for name, fn in JOBS.items()]


def serve(app: Flask, minutes: float) -> None:
    """Block, running the jobs on their intervals until interrupted."""
    from apscheduler.schedulers.blocking import BlockingScheduler
    scheduler = BlockingScheduler(timezone="UTC")
    scheduler.add_job(run_job, "interval", minutes=minutes, args=(app, "analyse_running", minutes, analyse_running),
                      next_run_time=datetime.now(timezone.utc), max_instances=1, coalesce=True)
    scheduler.add_job(run_job, "interval", minutes=CALENDAR_MINUTES,
                      args=(app, "keep_calendar", CALENDAR_MINUTES, keep_calendar),
                      next_run_time=datetime.now(timezone.utc), max_instances=1, coalesce=True)
    logging.basicConfig(level=logging.INFO)
    log.info("scheduler %s: analyses every %s minutes", WORKER, minutes)
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        pass
