"""Jobs that never finish (issue #20, defect 15): a claim or an analysis run holds a lease that a
heartbeat renews; a killed worker's claim is taken over once its lease lapses, and its analyses end
failed with the reason and are retried once by the next scheduler pass.

The kill tests run real processes (`pilot scheduler`, gunicorn) against a pilot with enough
transactions that its analysis takes about a second, so the SIGKILL lands mid-job; each checks
that it did (the rows are still `running` after the kill) rather than trusting the timing.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text

from pilot import analysis_runs, effects
from pilot.db import db, make_engine, utcnow
from pilot.models import AnalysisRun, JobRun, Transaction
from pilot.rollout import get_pilot
from pilot.scheduler import CALENDAR_MINUTES, run_all_once, run_job, slot_for
from tests.factories import NOW, plant

ROOT = Path(__file__).resolve().parents[1]
LEASE = 5  # seconds: PILOT_JOB_LEASE_SECONDS of the processes started here (short, but heartbeats get through
# on a loaded machine)
ONE_SLOT = "100000000"  # analysis interval in minutes (190 years): every scheduler here sees the same slot
COPIES = 200  # too_few's 2,000 transactions copied this often: its analysis takes about a second


def slow_pilot(app) -> str:
    """A running pilot with about 400,000 transactions (too_few's, copied under new event ids)."""
    key = plant(app, "too_few")
    columns = [c.name for c in Transaction.__table__.columns if c.name != "id"]
    picked = ", ".join("event_id || '-' || n.k" if c == "event_id" else c for c in columns)
    copy = (f"WITH RECURSIVE n(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM n WHERE k < :copies) "
            f"INSERT INTO transactions ({', '.join(columns)}) SELECT {picked} FROM transactions, n")
    with app.app_context():
        db.session.execute(text(copy), {"copies": COPIES})
        db.session.commit()
    return key


def wait_for(fetch: Callable[[], Any], what: str, timeout: float = 120.0, every: float = 0.02,
             log: Path | None = None) -> Any:
    """Poll until `fetch` answers something truthy (on a timeout, with the process's log if given)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := fetch():
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}" + (f"; its log:\n{log.read_text()}" if log else ""))


def first_row(app, stmt) -> Any:
    with app.app_context():
        return db.session.scalar(stmt)


def job_row(app, job: str) -> JobRun | None:
    return first_row(app, select(JobRun).where(JobRun.job == job).order_by(JobRun.id))


def run_row(app, run_id: int) -> AnalysisRun | None:
    return first_row(app, select(AnalysisRun).where(AnalysisRun.id == run_id))


def retry_of(app, run_id: int) -> AnalysisRun | None:
    return first_row(app, select(AnalysisRun).where(AnalysisRun.retry_of == run_id))


def worker_of(pid: int) -> str:
    return f"{socket.gethostname()}:{pid}"


@contextmanager
def scheduler(database_url: str, tmp_path: Path, name: str) -> Iterator[subprocess.Popen]:
    """A serving `pilot scheduler` process with a short lease, ended (SIGKILL) at exit if still alive."""
    env = {**os.environ, "PILOT_DATABASE_URL": database_url, "PILOT_AUTO_MIGRATE": "0",
           "PILOT_SECRET_KEY": "test-secret", "PILOT_INSTANCE_PATH": str(tmp_path / "instance"),
           "PILOT_JOB_LEASE_SECONDS": str(LEASE), "PYTHONPATH": str(ROOT)}
    with open(tmp_path / f"scheduler-{name}.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "pilot.cli", "scheduler", "--interval-minutes", ONE_SLOT],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        proc.log = Path(log.name)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(30)


def test_a_killed_scheduler_s_job_is_taken_over_after_its_lease(app, database_url, tmp_path):
    key = slow_pilot(app)
    with scheduler(database_url, tmp_path, "first") as first:
        created = wait_for(lambda: first_row(app, select(AnalysisRun)), "the job's analysis", log=first.log)
        started = wait_for(lambda: (r := run_row(app, created.id)).status != "queued" and r, "it to run", log=first.log)
        assert started.status == "running", (started.status, started.error, first.log.read_text())
        os.kill(first.pid, signal.SIGKILL)
        first.wait(30)
    lost_job = job_row(app, "analyse_running")
    assert (lost_job.status, lost_job.worker) == ("running", worker_of(first.pid)), "the kill missed the job"
    assert run_row(app, started.id).status == "running" and started.worker == worker_of(first.pid)

    with scheduler(database_url, tmp_path, "second") as second:
        job = wait_for(lambda: (j := job_row(app, "analyse_running")).status != "running" and j, "the takeover",
                       log=second.log)
        retry = wait_for(lambda: (r := retry_of(app, started.id)) and r.status in ("done", "failed") and r,
                         "the retry of the lost analysis", log=second.log)
        second.terminate()
    assert (job.status, job.worker) == ("done", worker_of(second.pid)), job.detail
    assert job.detail["analysed"][key]["decision"] and job.started_at >= lost_job.lease_until
    [taken] = job.detail["taken_over"]
    assert taken["worker"] == worker_of(first.pid) and taken["lease_until"] == lost_job.lease_until.isoformat()
    lost = run_row(app, started.id)
    assert lost.status == "failed" and lost.finished_at is not None
    assert lost.error.startswith(f"worker {worker_of(first.pid)} lost (lease expired at ")
    assert (retry.status, retry.cutoff, retry.stage) == ("done", lost.cutoff, lost.stage), retry.error
    assert f"retry of run {lost.id}" in retry.requested_by and retry.worker == worker_of(second.pid)


def api_run(server, run_id: int, headers: dict[str, str]) -> dict[str, Any]:
    r = server.request("GET", f"/api/v1/analyses/{run_id}", headers=headers)
    assert r.status == 200, r.data
    return json.loads(r.data)


def test_b_background_analysis_of_a_killed_worker_ends_failed_and_is_retried(app, auth, live_server):
    key = slow_pilot(app)
    server = live_server(env={"PILOT_JOB_LEASE_SECONDS": str(LEASE)})
    headers = auth("analyst")
    body = json.dumps({"background": True, "cutoff": NOW.isoformat()}).encode()
    r = server.request("POST", f"/api/v1/pilots/{key}/analyses", body=body,
                       headers={**headers, "Content-Type": "application/json"})
    assert r.status == 202, r.data
    run_id = json.loads(r.data)["id"]
    running = wait_for(lambda: (s := api_run(server, run_id, headers))["status"] == "running" and s, "running")
    pid = int(running["worker"].rsplit(":", 1)[1])
    assert pid in server.worker_pids() and running["started_at"] and running["lease_until"] > running["started_at"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: pid not in server.worker_pids() and server.worker_pids(), "gunicorn to replace the worker")
    still = api_run(server, run_id, headers)
    assert still["status"] == "running", "the kill missed the analysis"
    lapsed = datetime.fromisoformat(still["lease_until"])
    wait_for(lambda: utcnow() > lapsed, "the lease to lapse", timeout=3 * LEASE)

    out = {r["job"]: r for r in run_all_once(app, 60)}
    [recovered] = out["recover"]["detail"]["analyses"]
    lost = api_run(server, run_id, headers)
    assert lost["status"] == "failed"
    assert lost["error"].startswith(f"worker {running['worker']} lost (lease expired at ")
    assert recovered == {"run": run_id, "retry": recovered["retry"], "status": "done"}
    retry = api_run(server, recovered["retry"], headers)
    assert (retry["status"], retry["retry_of"], retry["cutoff"]) == ("done", run_id, lost["cutoff"]), retry["error"]
    assert retry["decision"] == "extend" and f"retry of run {run_id}" in retry["requested_by"]


def test_c_runs_are_recorded_running_while_they_execute(app, client, auth, monkeypatch):
    """Seen from another connection while the statistics are computed: the run is committed `running`."""
    key = plant(app, "too_few")
    engine = make_engine(app.config["DATABASE_URL"])
    compute, seen = effects.compute, []

    def peek(*args, **kwargs):
        with engine.connect() as conn:
            seen.append(conn.execute(select(AnalysisRun.status, AnalysisRun.worker, AnalysisRun.started_at,
                                            AnalysisRun.lease_until).order_by(AnalysisRun.id.desc()).limit(1)).one())
        return compute(*args, **kwargs)

    monkeypatch.setattr(effects, "compute", peek)
    r = client.post(f"/api/v1/pilots/{key}/analyses", json={"cutoff": NOW.isoformat()}, headers=auth("analyst"))
    out = {o["job"]: o for o in run_all_once(app, 60)}
    engine.dispose()
    assert r.status_code == 201 and r.json["status"] == "done" and out["analyse_running"]["status"] == "done"
    assert [s.status for s in seen] == ["running", "running"]
    assert all(s.worker == worker_of(os.getpid()) and s.lease_until > s.started_at for s in seen)
    assert r.json["worker"] == worker_of(os.getpid()) and r.json["started_at"] and r.json["retry_of"] is None


def test_a_long_job_keeps_its_claim_by_heartbeat(app):
    app.config["JOB_LEASE_SECONDS"] = 1.0
    began, out = threading.Event(), {}

    def slow(_session):
        began.set()
        time.sleep(3.5)  # over three leases
        return {"slept": 3.5}

    thread = threading.Thread(target=lambda: out.update(run_job(app, "slow", 60, slow)))
    thread.start()
    assert began.wait(30)
    tries = []
    while thread.is_alive():
        tries.append(run_job(app, "slow", 60, lambda _s: {"second": True})["ran"])
        time.sleep(0.1)
    thread.join()
    row = job_row(app, "slow")
    assert out["status"] == "done" and len(tries) > 5 and not any(tries)
    assert row.detail == {"slept": 3.5} and row.heartbeat_at > row.started_at + timedelta(seconds=2)
    assert row.lease_until > row.started_at + timedelta(seconds=3)


def test_lost_claims_are_taken_over_in_their_slot_and_closed_after_it(app, client, auth):
    now, slot = utcnow(), slot_for(60)
    assert CALENDAR_MINUTES == 60
    with app.app_context():
        db.session.add_all([
            JobRun(job="analyse_running", slot=slot, status="running", worker="gone:1", detail={},
                   started_at=now - timedelta(minutes=10), lease_until=now - timedelta(minutes=1)),
            JobRun(job="analyse_running", slot=str(int(slot) - 3), status="running", worker="gone:1", detail={},
                   started_at=now - timedelta(hours=3), lease_until=now - timedelta(hours=2, minutes=55)),
            JobRun(job="keep_calendar", slot=slot, status="running", worker="alive:2", detail={},
                   started_at=now - timedelta(minutes=1), lease_until=now + timedelta(minutes=4))])
        db.session.commit()
    out = {r["job"]: r for r in run_all_once(app, 60)}
    assert out["analyse_running"]["ran"] and out["analyse_running"]["status"] == "done"
    assert out["keep_calendar"] == {"job": "keep_calendar", "ran": False}  # alive: its lease holds
    assert out["recover"]["ran"] and [c["slot"] for c in out["recover"]["detail"]["closed"]] == [str(int(slot) - 3)]
    jobs = {(j["job"], j["slot"]): j for j in client.get("/api/v1/jobs", headers=auth("analyst")).json["items"]}
    taken = jobs[("analyse_running", slot)]
    assert taken["status"] == "done" and taken["worker"] == worker_of(os.getpid()) and taken["lease_until"]
    assert [t["worker"] for t in taken["detail"]["taken_over"]] == ["gone:1"]
    closed = jobs[("analyse_running", str(int(slot) - 3))]
    assert closed["status"] == "failed" and closed["finished_at"]
    assert closed["detail"]["error"].startswith("worker gone:1 lost (lease expired at ")
    assert jobs[("keep_calendar", slot)]["status"] == "running"


def test_lost_analyses_are_retried_once_and_a_lost_retry_is_not(app):
    key = plant(app, "too_few")
    with app.app_context():
        queued = analysis_runs.create_run(db.session, "analyst test", get_pilot(db.session, key), cutoff=NOW)
        queued.lease_until = utcnow() - timedelta(seconds=1)  # its worker died before it started the run
        db.session.commit()
    [recovered] = {r["job"]: r for r in run_all_once(app, 60)}["recover"]["detail"]["analyses"]
    lost, retry = run_row(app, queued.id), retry_of(app, queued.id)
    assert recovered == {"run": queued.id, "retry": retry.id, "status": "done"}
    assert lost.status == "failed" and "lost (lease expired at " in lost.error and f"run {retry.id}" in lost.error
    assert (retry.status, retry.cutoff, retry.config) == ("done", NOW, lost.config)
    assert retry.requested_by == f"scheduler (retry of run {queued.id} by analyst test)"
    with app.app_context():  # the retry's own worker is lost: it ends failed, and no retry of a retry
        db.session.get(AnalysisRun, retry.id).status = "running"
        db.session.get(AnalysisRun, retry.id).lease_until = utcnow() - timedelta(seconds=1)
        db.session.commit()
    [again] = {r["job"]: r for r in run_all_once(app, 60)}["recover"]["detail"]["analyses"]
    assert again == {"run": retry.id, "retry": None, "status": "failed"}
    assert run_row(app, retry.id).status == "failed" and "not retried" in run_row(app, retry.id).error
    assert {r["job"]: r for r in run_all_once(app, 60)}["recover"] == {
        "job": "recover", "ran": False, "detail": {"closed": [], "analyses": [], "batches_failed": 0}}
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(AnalysisRun)
                                 .where(AnalysisRun.retry_of.is_not(None))) == 1


def test_the_scheduler_ends_batches_whose_worker_died(app):
    """A batch left `running` by a killed worker (no heartbeat for a lease) ends failed on the next pass."""
    from pilot.models import IngestionBatch
    app.config["JOB_LEASE_SECONDS"] = 60
    now = utcnow()
    kw = {"source": "s", "actor": "a", "method": "csv", "on_error": "reject_batch", "status": "running"}
    with app.app_context():
        db.session.add_all([IngestionBatch(**kw, started_at=now - timedelta(minutes=5),
                                           heartbeat_at=now - timedelta(minutes=2)),
                            IngestionBatch(**kw, started_at=now - timedelta(minutes=5), heartbeat_at=now)])
        db.session.commit()
    recover = next(r for r in run_all_once(app, 60) if r["job"] == "recover")
    assert recover["detail"]["batches_failed"] == 1
    with app.app_context():
        statuses = [b.status for b in db.session.scalars(select(IngestionBatch).order_by(IngestionBatch.id))]
    assert statuses == ["failed", "running"]
