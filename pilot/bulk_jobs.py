"""A started or advanced customer pilot's stage assigned in the background (the bulk path), with its progress
kept as a job run (`job_runs`, job `bulk_assignment`, one slot per stage and request) under a lease, so a
lost worker's run ends failed by the scheduler's next pass like any other job."""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from pilot.assignment import assign_bulk, holdout
from pilot.db import db, utcnow
from pilot.leases import Heartbeat, lease_seconds
from pilot.models import Assignment, JobRun, Pilot
from pilot.rollout import get_pilot

log = logging.getLogger(__name__)
JOB = "bulk_assignment"


def wanted(pilot: Pilot) -> bool:
    """Whether the pilot's current stage is assigned in bulk: a running customer-randomised pilot."""
    return pilot.state == "running" and pilot.unit == "customer" and pilot.current_stage is not None


def start(app: Flask, session: Session, pilot: Pilot, again: bool = False) -> JobRun | None:
    """Claim the current stage's bulk assignment and run it in a background thread (after the caller's
    commit: the thread reads what the caller has committed). `again`: a new run for the same stage
    (the first one's slot is taken). None when another worker has the claim."""
    from pilot.scheduler import claim
    slot = f"{pilot.key}/stage{pilot.current_stage}" + (f"/{utcnow():%Y%m%d%H%M%S%f}" if again else "")
    run = claim(session, JOB, slot, lease_seconds())
    if run is None:
        return None
    thread = threading.Thread(target=_background, args=(app, run.id, pilot.key), name=f"{JOB}-{run.id}", daemon=True)
    thread.start()
    return run


def run_inline(session: Session, pilot: Pilot) -> dict[str, Any] | None:
    """The same claimed job, run in this thread (the scheduler's calendar: it has no request to answer);
    the job's detail, or None when another worker has the claim."""
    from pilot.scheduler import claim, finish
    run = claim(session, JOB, f"{pilot.key}/stage{pilot.current_stage}", lease_seconds())
    if run is None:
        return None
    try:
        pilot, counts = _assign(session, pilot.key)
        status, detail = "done", {"pilot": pilot.key, "stage": pilot.current_stage, **counts}
    except Exception as exc:
        session.rollback()
        log.exception("bulk assignment of %s failed", pilot.key)
        status, detail = "failed", {"pilot": pilot.key, "error": f"{type(exc).__name__}: {exc}"[:2000]}
    finish(session, run, status, detail)
    return detail


def _background(app: Flask, run_id: int, key: str) -> None:
    from pilot.scheduler import finish
    with app.app_context():
        session = db.session
        run = session.get(JobRun, run_id)
        with Heartbeat(db.engine, JobRun, run.id, run.worker, run.started_at, lease_seconds()):
            try:
                pilot, counts = _assign(session, key)
                status, detail = "done", {"pilot": key, "stage": pilot.current_stage, **counts}
            except Exception as exc:
                session.rollback()
                log.exception("bulk assignment of %s failed", key)
                status, detail = "failed", {"pilot": key, "error": f"{type(exc).__name__}: {exc}"[:2000]}
        finish(session, run, status, detail)


def _assign(session: Session, key: str, attempts: int = 3) -> tuple[Pilot, dict[str, Any]]:
    """Assign the pilot's current stage and commit; on SQLite a write of another request at the same
    moment is `database is locked` at once (no wait for a lock taken after a read), so try again."""
    for attempt in range(attempts):
        try:
            pilot = get_pilot(session, key)
            counts = assign_bulk(session, pilot, holdout())
            session.commit()
            return pilot, counts
        except OperationalError as exc:
            session.rollback()
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def progress(session: Session, pilot: Pilot) -> dict[str, Any] | None:
    """The latest background assignment of the pilot: its status, stage, counts so far, or None."""
    run = session.scalar(select(JobRun).where(JobRun.job == JOB, JobRun.slot.startswith(f"{pilot.key}/stage",
                                                                                      autoescape=True))
                         .order_by(JobRun.id.desc()).limit(1))
    if run is None:
        return None
    stage = int(run.slot.removeprefix(f"{pilot.key}/stage").split("/")[0])
    assigned = session.scalar(select(func.count()).select_from(Assignment).where(
        Assignment.pilot_id == pilot.id, Assignment.stage == stage))
    return {"status": run.status, "stage": stage, "started_at": run.started_at, "finished_at": run.finished_at,
            "assigned_in_stage": assigned, "assigned_now": (run.detail or {}).get("assigned_now"),
            "error": (run.detail or {}).get("error")}
