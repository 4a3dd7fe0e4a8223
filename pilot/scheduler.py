"""`pilot scheduler`: APScheduler in its own process, with each job firing claimed in the database.

Every job firing has a slot (the job's interval number since the epoch). A scheduler runs a job
only after inserting (job, slot) into `job_runs`; the unique constraint lets exactly one of two
schedulers win the insert (ON CONFLICT DO NOTHING), so a job runs once however many are up.
Jobs: re-analyse running pilots; act on a guardrail harmed by the sequential test (valid under daily
looks): drop the harmed arms (weight 0), or pause the pilot when every arm is harmed; start and end
stages at their planned dates.

A claim is a lease (pilot.leases), renewed by a heartbeat while the job runs. A claim whose lease
lapsed is a lost worker's (killed, or its host gone): in its own slot the next claim takes it over,
atomically, noting the lost attempt in `detail.taken_over`; a lost claim of an earlier slot ends
`failed` (the job's later slots run it anew: every job works from the current state). Each pass
(and, while serving, every third of a lease) also ends the analysis runs of lost workers `failed`
and retries each once.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from pilot import analysis_runs, ingestion, rollout
from pilot.audit import record
from pilot.db import db, utcnow
from pilot.errors import Conflict
from pilot.leases import Heartbeat, held_by, lease_seconds, lost_reason, worker_id
from pilot.models import JobRun, Pilot

log = logging.getLogger(__name__)
ACTOR = "scheduler"
CALENDAR_MINUTES = 60
WEBHOOK_SECONDS = 15  # how often `pilot scheduler` sends the webhook deliveries that are due


def claim(session: Session, job: str, slot: str, seconds: float) -> JobRun | None:
    """Insert (job, slot), or take it over if its lease lapsed; the winner gets the row, everyone else None."""
    now = utcnow()
    lease = {"status": "running", "worker": worker_id(), "started_at": now, "heartbeat_at": now,
             "lease_until": now + timedelta(seconds=seconds)}
    insert = (postgresql if session.bind.dialect.name == "postgresql" else sqlite).insert(JobRun)
    stmt = insert.values(job=job, slot=slot, detail={}, **lease) \
        .on_conflict_do_nothing(index_elements=["job", "slot"]).returning(JobRun.id)
    job_id = session.execute(stmt).scalar()
    if job_id is None:
        job_id = _take_over(session, job, slot, lease)
    session.commit()
    return session.get(JobRun, job_id, populate_existing=True) if job_id is not None else None


def _take_over(session: Session, job: str, slot: str, lease: dict[str, Any]) -> int | None:
    """Take over (job, slot) if its worker was lost: compare-and-set on the attempt read, so of two
    schedulers one wins; the lost attempt is kept in `detail.taken_over`."""
    old = session.execute(select(JobRun.id, JobRun.worker, JobRun.started_at, JobRun.lease_until,
                                 JobRun.heartbeat_at, JobRun.detail)
                          .where(JobRun.job == job, JobRun.slot == slot, JobRun.status == "running",
                                 JobRun.lease_until < lease["started_at"])).first()
    if old is None:
        return None
    lost = {"worker": old.worker, "started_at": old.started_at.isoformat(), "lease_until": old.lease_until.isoformat(),
            "heartbeat_at": old.heartbeat_at.isoformat() if old.heartbeat_at else None}
    detail = {**old.detail, "taken_over": [*old.detail.get("taken_over", []), lost]}
    won = session.execute(update(JobRun).where(held_by(JobRun, old.id, old.worker, old.started_at))
                          .values(detail=detail, **lease), execution_options={"synchronize_session": False})
    if won.rowcount != 1:
        return None
    log.warning("job %s slot %s: taken over from %s", job, slot, lost_reason(old.worker, old.lease_until))
    return old.id


def slot_for(minutes: float, now: datetime | None = None) -> str:
    """The interval number since the epoch: every scheduler computes the same slot for the same firing."""
    now = now or datetime.now(UTC)
    return str(int(now.timestamp() // (minutes * 60)))


def run_job(app: Flask, job: str, minutes: float, fn: Callable[[Session], dict[str, Any]]) -> dict[str, Any]:
    """Run the job once for the current slot if this process wins the claim, renewing its lease meanwhile."""
    with app.app_context():
        session = db.session
        seconds = lease_seconds()
        run = claim(session, job, slot_for(minutes), seconds)
        if run is None:
            return {"job": job, "ran": False}
        with Heartbeat(db.engine, JobRun, run.id, run.worker, run.started_at, seconds):
            status, detail = _attempt(session, job, fn)
        taken = {"taken_over": run.detail["taken_over"]} if "taken_over" in run.detail else {}
        finish(session, run, status, {**detail, **taken})
        return {"job": job, "ran": True, "status": status, "detail": detail}


def _attempt(session: Session, job: str, fn: Callable[[Session], dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    try:
        return "done", fn(session)
    except Exception as exc:
        session.rollback()
        log.exception("job %s failed", job)
        return "failed", {"error": f"{type(exc).__name__}: {exc}"[:2000]}


def finish(session: Session, run: JobRun, status: str, detail: dict[str, Any]) -> bool:
    """Record the job run's outcome unless another worker took it over meanwhile (then False)."""
    ended = session.execute(update(JobRun).where(held_by(JobRun, run.id, run.worker, run.started_at))
                            .values(status=status, detail=detail, finished_at=utcnow()),
                            execution_options={"synchronize_session": False})
    session.commit()
    if ended.rowcount != 1:
        log.warning("job %s slot %s was taken over while it ran; its outcome here is not recorded", run.job, run.slot)
    return ended.rowcount == 1


def _running(session: Session) -> list[Pilot]:
    return list(session.scalars(select(Pilot).where(Pilot.state == "running").order_by(Pilot.id)))


def analyse_running(session: Session) -> dict[str, Any]:
    """Analyse every running pilot's current stage; a guardrail harmed (by the sequential test) in some
    treatment arms sets their weights to 0 (audited `auto_drop_arm`), in every arm pauses the pilot."""
    done, paused, dropped = {}, [], []
    for key in [p.key for p in _running(session)]:
        pilot = session.scalar(select(Pilot).where(Pilot.key == key))
        try:
            run = analysis_runs.create_run(session, ACTOR, pilot)
            session.commit()
        except Exception as exc:
            session.rollback()
            log.exception("analysis of %s failed", key)
            done[key] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            continue
        run = analysis_runs.execute_leased(session, run.id)
        if run.status != "done":
            done[key] = {"run": run.id, "error": (run.error or run.status)[:500]}
            continue
        done[pilot.key] = {"run": run.id, "decision": run.decision}
        harmed = [r for r in run.results.get("metrics", []) if r.get("harmed_sequential")]
        if harmed:
            reason = "; ".join(f"guardrail {r.get('label') or r['metric']} harmed in {r['arm']} (sequential CI "
                               f"{r['seq_ci_rel_low']:+.1%} to {r['seq_ci_rel_high']:+.1%}, tolerated "
                               f"{r['max_harm']:.1%})" for r in harmed)
            arms = sorted({r["arm"] for r in harmed})
            others = [a["variant"] for a in run.results.get("arms", [])
                      if a["role"] == "treatment" and a["variant"] not in arms]
            if pilot.unit == "customer" and others:  # the harmed arms go; the pilot runs on with the others
                stages = analysis_runs.drop_arms(session, ACTOR, pilot, arms, pilot.current_stage)
                record(session, ACTOR, "auto_drop_arm", "pilot", pilot.key,
                       after={"run": run.id, "arms": arms, "stages": stages, "reason": reason})
                from pilot import webhooks
                webhooks.emit(session, "arm.dropped", {"pilot": pilot.key, "run": run.id, "arms": arms,
                                                       "stages": stages, "reason": reason},
                              f"Pilot {pilot.key}: {', '.join(arms)} dropped by the guardrail check ({reason}).")
                dropped.append({"pilot": pilot.key, "arms": arms, "reason": reason})
            else:
                rollout.transition(session, ACTOR, pilot, "pause", f"guardrail auto-pause: {reason}"[:500])
                record(session, ACTOR, "auto_pause", "pilot", pilot.key, after={"run": run.id, "reason": reason})
                paused.append({"pilot": pilot.key, "reason": reason})
        session.commit()
    return {"analysed": done, "paused": paused, "dropped_arms": dropped}


def keep_calendar(session: Session) -> dict[str, Any]:
    """Start drafts whose first stage is due, advance or complete running pilots whose stage ended."""
    today = utcnow().date()
    started, advanced, completed, held = [], [], [], []
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
        action = "complete" if nxt is None else "advance"
        if nxt is not None and nxt.planned_start is not None and nxt.planned_start > today:
            continue
        try:  # the calendar holds to the gate like everyone (pilot.governance): a refusal leaves the pilot be
            rollout.transition(session, ACTOR, pilot, action)
        except Conflict as exc:
            held.append({"pilot": pilot.key, "action": action, "code": exc.code, "message": exc.message})
            continue
        (completed if action == "complete" else advanced).append(pilot.key)
    session.commit()
    from pilot import bulk_jobs  # a started or advanced customer pilot's new scope is assigned, as from the pages
    assigned = {}
    for key in (*started, *advanced):
        pilot = rollout.get_pilot(session, key)
        if bulk_jobs.wanted(pilot) and (detail := bulk_jobs.run_inline(session, pilot)) is not None:
            assigned[key] = detail
    return {"started": started, "advanced": advanced, "completed": completed, "held": held, "assigned": assigned}


JOBS = {"analyse_running": analyse_running, "keep_calendar": keep_calendar}


def jobs(minutes: float) -> dict[str, tuple[float, Callable[[Session], dict[str, Any]]]]:
    """Each job with its interval in minutes (analyses every `minutes`)."""
    return {name: (minutes if name == "analyse_running" else CALENDAR_MINUTES, fn) for name, fn in JOBS.items()}


def run_all_once(app: Flask, minutes: float) -> list[dict[str, Any]]:
    """Recover what lost workers left, then every job for the current slot (what one scheduler tick does),
    then the webhook deliveries due (the events those jobs queued among them)."""
    return [recover(app, minutes), *(run_job(app, name, m, fn) for name, (m, fn) in jobs(minutes).items()),
            deliver_webhooks(app)]


def deliver_webhooks(app: Flask) -> dict[str, Any]:
    """Send the webhook deliveries that are due; each is leased, so schedulers never send one twice."""
    from pilot import webhooks
    with app.app_context():
        try:
            detail = webhooks.deliver_due(db.session)
        except Exception:  # a broken delivery pass must not stop the scheduler; the rows stay due
            db.session.rollback()
            log.exception("webhook deliveries failed")
            return {"job": "deliver_webhooks", "ran": False, "detail": {}}
        return {"job": "deliver_webhooks", "ran": any(detail.values()), "detail": detail}


def take_over_lost(app: Flask, minutes: float) -> list[dict[str, Any]]:
    """Recover, then run each job whose current slot's claim was lost (what a serving scheduler does
    between its jobs' firings)."""
    with app.app_context():
        lost = set(db.session.execute(select(JobRun.job, JobRun.slot).where(
            JobRun.status == "running", JobRun.lease_until < utcnow())).tuples())
    return [recover(app, minutes), *(run_job(app, name, m, fn) for name, (m, fn) in jobs(minutes).items()
                                     if (name, slot_for(m)) in lost)]


def recover(app: Flask, minutes: float) -> dict[str, Any]:
    """End failed the lost claims of past slots, and the lost analysis runs, retrying each of those once."""
    with app.app_context():
        session = db.session
        current = {name: slot_for(m) for name, (m, _) in jobs(minutes).items()}
        closed = close_lost_slots(session, current)
        analyses = [retry_lost(session, row) for row in analysis_runs.lost_runs(session)]
        analyses = [a for a in analyses if a is not None]
        # a batch beats every HEARTBEAT_SECONDS while it streams; a lease without a beat: its worker is gone
        batches = ingestion.fail_stale_batches(session, utcnow() - timedelta(seconds=lease_seconds()))
        session.commit()
        return {"job": "recover", "ran": bool(closed or analyses or batches),
                "detail": {"closed": closed, "analyses": analyses, "batches_failed": batches}}


def close_lost_slots(session: Session, current: dict[str, str]) -> list[dict[str, Any]]:
    """End failed each lost claim but the jobs' current slots (those the next claim takes over)."""
    closed = []
    for row in session.execute(select(JobRun.id, JobRun.job, JobRun.slot, JobRun.worker, JobRun.started_at,
                                      JobRun.lease_until, JobRun.detail)
                               .where(JobRun.status == "running", JobRun.lease_until < utcnow())
                               .order_by(JobRun.id)):
        if current.get(row.job) == row.slot:
            continue
        reason = lost_reason(row.worker, row.lease_until)
        ended = session.execute(update(JobRun).where(held_by(JobRun, row.id, row.worker, row.started_at))
                                .values(status="failed", finished_at=utcnow(), detail={**row.detail, "error": reason}),
                                execution_options={"synchronize_session": False})
        if ended.rowcount == 1:
            closed.append({"job": row.job, "slot": row.slot, "error": reason})
    session.commit()
    return closed


def retry_lost(session: Session, row: Any) -> dict[str, Any] | None:
    """End a lost analysis run failed and run its retry here (None if another scheduler got to it first)."""
    ended = analysis_runs.end_lost(session, ACTOR, row)
    session.commit()
    if ended is None:
        return None
    lost, retry = ended
    log.warning("analysis %s: %s", lost.id, lost.error)
    if retry is None:
        return {"run": lost.id, "retry": None, "status": lost.status}
    return {"run": lost.id, "retry": retry.id, "status": analysis_runs.execute_leased(session, retry.id).status}


def serve(app: Flask, minutes: float) -> None:
    """Block, running the jobs on their intervals until interrupted."""
    from apscheduler.schedulers.blocking import BlockingScheduler
    # a firing that starts late still runs (APScheduler skips one over a second late by default: under
    # load, the first analysis at start-up was skipped, and with it a whole interval)
    scheduler = BlockingScheduler(timezone="UTC", job_defaults={"misfire_grace_time": None})
    # a lost worker's claims and analyses are recovered within a lease and a third after it stopped
    scheduler.add_job(take_over_lost, "interval", seconds=app.config["JOB_LEASE_SECONDS"] / 3, args=(app, minutes),
                      max_instances=1, coalesce=True)
    scheduler.add_job(run_job, "interval", minutes=minutes, args=(app, "analyse_running", minutes, analyse_running),
                      next_run_time=datetime.now(UTC), max_instances=1, coalesce=True)
    scheduler.add_job(deliver_webhooks, "interval", seconds=WEBHOOK_SECONDS, args=(app,), max_instances=1,
                      coalesce=True)
    scheduler.add_job(run_job, "interval", minutes=CALENDAR_MINUTES,
                      args=(app, "keep_calendar", CALENDAR_MINUTES, keep_calendar),
                      next_run_time=datetime.now(UTC), max_instances=1, coalesce=True)
    logging.basicConfig(level=logging.INFO)
    log.info("scheduler %s: analyses every %s minutes, leases of %s seconds", worker_id(), minutes,
             app.config["JOB_LEASE_SECONDS"])
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        pass
