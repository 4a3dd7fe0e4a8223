"""Analysis runs: snapshot a stage's configuration, aggregate in the database, compute, recommend, store.

A run is reproducible: it records its cut-off and configuration, and the aggregates only read
transactions before the cut-off and assignments made before it, so the same data gives the same
numbers. Applying a recommendation turns its action into lifecycle or stage changes, audited.

A run is recorded `running` (committed, with its worker and a lease, see pilot.leases) before it
computes, and a heartbeat renews the lease meanwhile; a run whose lease lapsed lost its worker, and
the scheduler ends it `failed` with the reason and retries it once (`lost_runs`, `end_lost`).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from flask import Flask, current_app
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from pilot import effects, rollout
from pilot.aggregation import Runner, customer_cube, store_cube
from pilot.analysis_config import AnalysisConfig
from pilot.assignment import allocation_changes, expected_shares
from pilot.audit import record
from pilot.data_quality import missing_batches
from pilot.db import utcnow
from pilot.errors import Conflict, Invalid
from pilot.leases import Heartbeat, lease_seconds, lost_reason, worker_id
from pilot.metric_columns import run_definitions
from pilot.metric_weeks import metric_weeks
from pilot.models import AnalysisRun, Assignment, Enrolment, Pilot, Stage, Store, Transaction
from pilot.planning import eligible_customers, stage_pool
from pilot.recommendation import recommend
from pilot.store_effects import contamination
from pilot.store_randomisation import scheme
from pilot.verdicts import versus_best
from pilot.weekly_effects import weekly_value

log = logging.getLogger(__name__)
PRE_DAYS = 56
BACKGROUND_UNITS = 200_000
ENGINES = ("database", "spark")


def pilot_config(pilot: Pilot, stage: Stage) -> dict[str, Any]:
    """The configuration a run is computed with (stored with the run)."""
    mechanics = {v.key: v.mechanic for v in pilot.programme.variants}
    control = next(k for k, w in stage.allocation.items() if mechanics.get(k) == "control" and w > 0)
    return {"pilot": pilot.key, "stage": stage.position, "unit": pilot.unit, "primary_metric": pilot.primary_metric,
            "guardrails": pilot.guardrails, "alpha": pilot.alpha, "power": pilot.power, "mde": pilot.mde,
            "margin_rate": pilot.margin_rate, "allocation": stage.allocation, "control": control,
            "mechanics": mechanics, "gate": stage.gate, "eligible_groups": stage.eligible_groups,
            "pre_days": PRE_DAYS, "sequential_tuning": 5000.0,
            "plan_version": pilot.plan_version}  # the analysis plan's version it follows (pilot.governance)


def create_run(session: Session, actor: str, pilot: Pilot, cutoff: datetime | None = None,
               engine: str | None = None) -> AnalysisRun:
    """A queued run of the pilot's current stage, leased to this process (which is to start it), computed
    by `engine` (default PILOT_ANALYSIS_ENGINE: database or spark)."""
    engine = engine or current_app.config.get("ANALYSIS_ENGINE") or "database"
    if engine not in ENGINES:
        raise Invalid(f"Unknown analysis engine {engine!r}; one of {', '.join(ENGINES)}.",
                      details={"fields": {"engine": ["Unknown engine."]}})
    if pilot.started_at is None or pilot.current_stage is None:
        raise Conflict(f"Pilot {pilot.key!r} has not started; there is nothing to analyse.", code="not_started")
    stage = pilot.stage(pilot.current_stage)
    # a stage that has ended (completed, cancelled, imported) is read up to its end, never past it
    cutoff = min(cutoff or utcnow(), stage.ended_at or utcnow(), utcnow())
    if cutoff <= (stage.started_at or pilot.started_at):
        raise Invalid("The cut-off is before the stage started.", details={"fields": {"cutoff": ["Too early."]}})
    config = {**pilot_config(pilot, stage), **run_definitions(session, pilot, engine)}  # (their versions)
    run = AnalysisRun(pilot_id=pilot.id, stage=stage.position, status="queued", requested_by=actor, cutoff=cutoff,
                      config=config, worker=worker_id(), engine=engine,
                      lease_until=utcnow() + timedelta(seconds=lease_seconds()))
    session.add(run)
    session.flush()
    return run


def units(session: Session, pilot: Pilot, stage: Stage) -> int:
    return session.scalar(select(func.count()).select_from(Assignment)
                          .where(Assignment.pilot_id == pilot.id, Assignment.stage == stage.position)) or 0


def execute(session: Session, run: AnalysisRun) -> AnalysisRun:
    """Compute the run (aggregates in SQL, statistics in experiments/) and store every table."""
    pilot = session.get(Pilot, run.pilot_id)
    stage = pilot.stage(run.stage)
    if run.status == "queued":  # (a leased run is running already, committed; writing it again would lock the row)
        run.status, run.started_at = "running", utcnow()
    started = time.perf_counter()
    timings: dict[str, float] = {}
    start = stage.started_at or pilot.started_at
    days = effects.now_days(start, run.cutoff)
    work_mem = current_app.config.get("ANALYSIS_WORK_MEM", "64MB")
    if session.bind.dialect.name == "postgresql":
        if work_mem:  # sorts and hashes of the per-unit sums over millions of rows (see query_plans.set_based_plan)
            session.execute(text("SELECT set_config('work_mem', :v, true)"), {"v": work_mem})
        # JIT compiles the wide aggregate once per parallel worker: seconds of compiling, no gain
        session.execute(text("SET LOCAL jit = off"))
    with _runner(session, run, pilot, stage) as runner:
        if pilot.unit == "store":
            cube = store_cube(session, pilot, stage, run.cutoff, runner)
        else:
            cube = customer_cube(session, pilot, stage, run.cutoff, run.config.get("pre_days", PRE_DAYS),
                                 weekly_value(run.config["primary_metric"]),
                                 [end for end in allocation_changes(stage) if end < run.cutoff], runner,
                                 run.config.get("defined_metrics"))
    if pilot.unit == "store":
        blocks = scheme(session, pilot, stage)  # the matched scheme, for the randomisation test
        for (_, store_id), values in cube.stores.items():
            values["block"] = blocks.get(store_id, -1)
    timings["aggregate_s"] = round(time.perf_counter() - started, 4)
    t1 = time.perf_counter()
    config = AnalysisConfig.from_dict(run.config)
    results = effects.compute(config, cube, days, projected_customers=_next_scope_customers(session, pilot, stage),
                              daily_new_units=_daily_new_units(session, pilot, stage, run.cutoff),
                              srm_shares=expected_shares(session, pilot, stage, run.cutoff),
                              pool=stage_pool(session, pilot, stage, run.cutoff))
    quality = stage_quality(session, pilot, stage, run.cutoff)
    results["data_quality"] = quality
    results["cutoff"] = run.cutoff.isoformat()
    results["pre_start"] = cube.pre_start.isoformat() if cube.pre_start else None
    results["stage"] = {"position": stage.position, "name": stage.name,
                        "started_at": start.isoformat() if start else None}
    if pilot.unit == "customer":
        results["versus_best"] = versus_best(config, cube, results)
        results["metric_weeks"] = metric_weeks(cube, config)  # the report's week drill-down of every metric
    else:
        results["contamination"] = contamination(session, pilot, stage, run.cutoff)
    run.recommendation = recommend(config, results, quality)
    results["verdicts"] = run.recommendation["verdicts"]
    timings["compute_s"] = round(time.perf_counter() - t1, 4)
    timings["total_s"] = round(time.perf_counter() - started, 4)
    run.results, run.timings, run.decision = results, timings, run.recommendation["decision"]
    run.counts = {a["variant"]: a["n"] for a in results["arms"]}
    run.status, run.finished_at = "done", utcnow()
    session.flush()
    _announce(session, pilot, run)
    return run


def _announce(session: Session, pilot: Pilot, run: AnalysisRun) -> None:
    """Queue analysis.completed, and recommendation.changed when the stage's previous run decided otherwise."""
    from pilot import webhooks
    data = {"pilot": pilot.key, "run": run.id, "stage": run.stage, "decision": run.decision,
            "summary": run.recommendation.get("summary"), "plan_version": run.config.get("plan_version")}
    webhooks.emit(session, "analysis.completed", data, f"Analysis {run.id} of pilot {pilot.key} (stage {run.stage}): "
                  f"{run.recommendation.get('summary') or run.decision}.")
    before = session.scalar(select(AnalysisRun.decision).where(
        AnalysisRun.pilot_id == pilot.id, AnalysisRun.stage == run.stage, AnalysisRun.status == "done",
        AnalysisRun.id != run.id).order_by(AnalysisRun.cutoff.desc(), AnalysisRun.id.desc()).limit(1))
    if before is not None and before != run.decision:
        webhooks.emit(session, "recommendation.changed", {**data, "previous": before},
                      f"The recommendation for pilot {pilot.key} changed from {before} to {run.decision}: "
                      f"{run.recommendation.get('summary') or ''}")


@contextmanager
def _runner(session: Session, run: AnalysisRun, pilot: Pilot, stage: Stage) -> Iterator[Runner | None]:
    """Where the run's aggregates are computed: Pilot's database (None: the default) or Spark."""
    if (run.engine or "database") == "database":
        yield None
        return
    from pilot import spark_engine  # (pyspark is an optional extra)
    with spark_engine.runner(session, current_app.config, pilot, stage, run.cutoff) as runner:
        yield runner


def _next_scope_customers(session: Session, pilot: Pilot, stage: Stage) -> int | None:
    nxt = pilot.stage(stage.position + 1)
    return eligible_customers(session, nxt) if nxt is not None else None  # scope × eligible groups


def _daily_new_units(session: Session, pilot: Pilot, stage: Stage, cutoff: datetime) -> float | None:
    week = session.scalar(select(func.count()).select_from(Assignment).where(
        Assignment.pilot_id == pilot.id, Assignment.stage == stage.position,
        Assignment.assigned_at >= cutoff - timedelta(days=7), Assignment.assigned_at < cutoff)) or 0
    return week / 7 if week else None


def stage_quality(session: Session, pilot: Pilot, stage: Stage, cutoff: datetime) -> dict[str, Any]:
    """Data problems that make results untrustworthy: silent enrolled stores, failed batches, late data."""
    start = stage.started_at or pilot.started_at
    enrolled = [e.store_id for e in session.scalars(select(Enrolment).where(
        Enrolment.pilot_id == pilot.id, Enrolment.stage_id == stage.id))]
    per_store = dict(session.execute(
        select(Transaction.store_id, func.count()).where(Transaction.store_id.in_(enrolled),
                                                         Transaction.occurred_at >= start,
                                                         Transaction.occurred_at < cutoff)
        .group_by(Transaction.store_id)).all()) if enrolled else {}
    codes = dict(session.execute(select(Store.id, Store.code).where(Store.id.in_(enrolled))).all()) if enrolled else {}
    silent = sorted(codes[s] for s in enrolled if not per_store.get(s))
    # a failed or rejected batch counts only for the stores, customers and window (pre-period included)
    # its rows concerned, and only while its rows are missing (pilot.data_quality.missing_batches)
    missing = missing_batches(session, pilot.id, enrolled, start, cutoff, start - timedelta(days=PRE_DAYS))
    failed = len(missing)
    days = (cutoff - start).total_seconds() / 86400
    problems = []
    if silent and per_store and days >= 3:
        problems.append({"code": "silent_stores", "stores": silent,
                         "message": f"{len(silent)} enrolled store(s) sent no transactions since the stage "
                                    f"started: {', '.join(silent[:10])}{'…' if len(silent) > 10 else ''}."})
    if missing:
        named = "; ".join(b["message"] for b in missing[:5]) + ("; …" if len(missing) > 5 else "")
        problems.append({"code": "failed_batches", "batches": [b["batch_id"] for b in missing], "missing": missing,
                         "message": f"{failed} ingestion batch(es) that concern this pilot failed or were rejected "
                                    f"and their rows are still missing: {named}."})
    return {"enrolled_stores": len(enrolled), "stores_with_data": len(per_store), "silent_stores": silent,
            "failed_batches": failed, "transactions": int(sum(per_store.values())), "problems": problems}


def request_run(session: Session, actor: str, pilot: Pilot, cutoff: datetime | None,
                background: bool | None, engine: str | None = None) -> AnalysisRun:
    """A queued run of the pilot's current stage, audited; `run.background` says whether it is to run
    in the background (large pilots) or at once. The caller commits, then calls `launch`."""
    run = create_run(session, actor, pilot, cutoff, engine)
    if background is None:
        background = units(session, pilot, pilot.stage(run.stage)) > BACKGROUND_UNITS
    run.background = background
    record(session, actor, "analyse", "pilot", pilot.key, after={"run": run.id, "stage": run.stage,
                                                                 "background": background})
    return run


def launch(app: Flask, session: Session, run: AnalysisRun) -> AnalysisRun:
    """Compute a committed, queued run at once, or start it in a background thread with a status to poll.
    From here the run is a leased job: `execute_leased` commits its own steps (running, then done or failed)."""
    if not getattr(run, "background", False):
        return execute_leased(session, run.id)
    thread = threading.Thread(target=_background, args=(app, run.id), name=f"analysis-{run.id}", daemon=True)
    thread.start()
    return run


def _background(app: Flask, run_id: int) -> None:
    from pilot.db import db
    with app.app_context():
        execute_leased(db.session, run_id)


def start(session: Session, run: AnalysisRun, seconds: float) -> None:
    """Mark the run running here, with a fresh lease (the caller commits, so other sessions see it)."""
    now = utcnow()
    run.status, run.worker, run.started_at = "running", worker_id(), now
    run.lease_until, run.heartbeat_at = now + timedelta(seconds=seconds), now


def execute_leased(session: Session, run_id: int) -> AnalysisRun:
    """Start a queued run (committed), compute it under a heartbeat and commit it done or failed."""
    run = session.get(AnalysisRun, run_id)
    if run.status != "queued":  # ended meanwhile (its lease lapsed before this worker got to it)
        return run
    seconds = lease_seconds()
    start(session, run, seconds)
    session.commit()
    with Heartbeat(session.get_bind(), AnalysisRun, run.id, run.worker, run.started_at, seconds) as beat:
        try:
            execute(session, run)
        except Exception as exc:
            session.rollback()
            error = f"{type(exc).__name__}: {exc}"[:2000]
            return _failed(session, run_id, error) if beat.holds() else _lapsed(session, run_id)
        if not beat.holds():
            session.rollback()
            return _lapsed(session, run_id)
        session.commit()
    return run


def _failed(session: Session, run_id: int, error: str) -> AnalysisRun:
    run = session.get(AnalysisRun, run_id)
    run.status, run.error, run.finished_at = "failed", error, utcnow()
    session.commit()
    return run


def _lapsed(session: Session, run_id: int) -> AnalysisRun:
    # no heartbeat got through for a whole lease: the scheduler may have ended and retried the run already
    log.warning("analysis %s: its lease lapsed while it ran; this worker's outcome is discarded", run_id)
    return session.get(AnalysisRun, run_id, populate_existing=True)


def lost_runs(session: Session) -> list[Any]:
    """The queued or running runs whose lease lapsed (id, status, worker, lease_until), oldest first."""
    return list(session.execute(
        select(AnalysisRun.id, AnalysisRun.status, AnalysisRun.worker, AnalysisRun.lease_until)
        .where(AnalysisRun.status.in_(("queued", "running")), AnalysisRun.lease_until < utcnow())
        .order_by(AnalysisRun.id)).all())


def end_lost(session: Session, actor: str, lost: Any) -> tuple[AnalysisRun, AnalysisRun | None] | None:
    """End a lost run failed with the reason, with a queued retry unless it is one itself (a run that
    kills its worker is not retried for ever); None if another scheduler ended it first."""
    # compare-and-set on what lost_runs read: of two schedulers, one ends (and retries) the run
    won = session.execute(update(AnalysisRun).where(
        AnalysisRun.id == lost.id, AnalysisRun.status == lost.status, AnalysisRun.lease_until == lost.lease_until)
        .values(status="failed", finished_at=utcnow()), execution_options={"synchronize_session": False})
    if won.rowcount != 1:
        return None
    run = session.get(AnalysisRun, lost.id, populate_existing=True)
    retry = None if run.retry_of is not None else _retry(session, actor, run)
    run.error = lost_reason(lost.worker, lost.lease_until) + (
        f"; retried as run {retry.id}" if retry else "; not retried: it was a retry itself")
    session.flush()
    return run, retry


def _retry(session: Session, actor: str, lost: AnalysisRun) -> AnalysisRun:
    """A queued run of the same pilot, stage, cut-off and configuration as the lost one."""
    retry = AnalysisRun(pilot_id=lost.pilot_id, stage=lost.stage, status="queued", cutoff=lost.cutoff,
                        config=dict(lost.config), retry_of=lost.id, worker=worker_id(), engine=lost.engine,
                        requested_by=f"{actor} (retry of run {lost.id} by {lost.requested_by})"[:200],
                        lease_until=utcnow() + timedelta(seconds=lease_seconds()))
    session.add(retry)
    session.flush()
    return retry


def apply(session: Session, actor: str, run: AnalysisRun, action: dict[str, Any] | None = None) -> dict[str, Any]:
    """Carry out a run's recommended action (or a chosen one) on its pilot, audited."""
    pilot = session.get(Pilot, run.pilot_id)
    if run.status != "done":
        raise Conflict(f"Analysis {run.id} is {run.status}; only a finished run can be applied.",
                       code="not_done")
    if pilot.current_stage != run.stage:
        raise Conflict(f"The pilot is in stage {pilot.current_stage} now; this run is of stage {run.stage}.",
                       code="stale_run")
    action = action or run.recommendation.get("action") or {}
    kind = action.get("type")
    stage = pilot.stage(run.stage)
    reason = f"analysis {run.id}: {run.decision}"
    drops = action.get("drop_arms") or ([action.get("arm")] if kind == "drop_arm" else [])
    drops = drops if isinstance(drops, list) else [drops]
    if kind == "advance":  # the next stage starts without the dropped arms
        drop_arms(session, actor, pilot, drops, stage.position + 1)
    if kind in ("advance", "pause", "rollback", "resume", "complete"):
        rollout.transition(session, actor, pilot, kind, reason if kind == "rollback" else None)
    elif kind == "narrow_groups":
        rollout.update_stage(session, actor, pilot, stage.position, {"eligible_groups": list(action["groups"])})
        drop_arms(session, actor, pilot, drops, stage.position)
    elif kind == "drop_arm":
        drop_arms(session, actor, pilot, drops, stage.position)
    elif kind == "extend":
        end = stage.planned_end or utcnow().date()
        rollout.update_stage(session, actor, pilot, stage.position,
                             {"planned_end": end + timedelta(days=int(action.get("days") or 7))})
    elif kind in ("reprice", "make_dynamic"):
        raise Conflict("This recommendation changes the programme's variant; edit the variant's parameters "
                            "(PATCH /api/v1/programmes/{key}) — it cannot be applied automatically.",
                       code="manual_change")
    else:
        raise Invalid(f"Unknown action {kind!r}.", details={"fields": {"type": ["Unknown action."]}})
    run.applied_at, run.applied_by = utcnow(), actor
    record(session, actor, "apply_recommendation", "pilot", pilot.key,
           after={"run": run.id, "decision": run.decision, "action": action})
    session.flush()
    return {"run": run.id, "pilot": pilot.key, "applied": action, "state": pilot.state,
            "current_stage": pilot.current_stage}


def drop_arms(session: Session, actor: str, pilot: Pilot, arms: list[str], first: int) -> list[int]:
    """Set the arms' weights to 0 (the others scaled up to sum 1) in stage `first` and every later one;
    the positions of the stages changed. Assigned units keep their arm (a running stage logs the change)."""
    if not arms:
        return []
    mechanics = {v.key: v.mechanic for v in pilot.programme.variants}
    bad = [a for a in arms if not isinstance(a, str) or mechanics.get(a) in (None, "control")]
    if bad:
        raise Invalid(f"Cannot drop {', '.join(map(repr, bad))}: not a treatment variant of the programme.",
                      details={"fields": {"drop_arms": ["Not a treatment variant."]}})
    changed = []
    for stage in [s for s in pilot.stages if s.position >= first]:
        if not any(stage.allocation.get(a, 0) > 0 for a in arms):
            continue
        kept = {k: (0.0 if k in arms else w) for k, w in stage.allocation.items()}
        total = sum(kept.values())
        rollout.update_stage(session, actor, pilot, stage.position,
                             {"allocation": {k: w / total for k, w in kept.items()}})
        changed.append(stage.position)
    return changed
