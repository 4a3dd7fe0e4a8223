"""Leases on job runs and analysis runs: a worker holds a run only while it keeps renewing the lease.

A run records who runs it (`worker`, host:pid), since when (`started_at`) and until when its claim
holds (`lease_until`). While the work goes on, a heartbeat thread renews the lease every third of
it, on a connection of its own (the work's transaction may be long and must stay the caller's), so
a long but alive job keeps its claim. A killed worker stops renewing: once `lease_until` has passed,
another worker may take the run over or end it failed. The lease is PILOT_JOB_LEASE_SECONDS.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import datetime, timedelta
from typing import Any, Self

from flask import current_app
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from pilot.db import utcnow

log = logging.getLogger(__name__)
DEFAULT_SECONDS = 300.0


def worker_id() -> str:
    """This process as runs record it: host:pid (read at call time: gunicorn forks its workers)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def lease_seconds() -> float:
    """The configured lease (PILOT_JOB_LEASE_SECONDS)."""
    return float(current_app.config.get("JOB_LEASE_SECONDS", DEFAULT_SECONDS))


def lost_reason(worker: str | None, lease_until: datetime) -> str:
    """Why a run whose lease lapsed was ended."""
    return f"worker {worker or '(unknown)'} lost (lease expired at {lease_until:%Y-%m-%d %H:%M:%S} UTC)"


def held_by(model: Any, row_id: int, worker: str, started_at: datetime) -> Any:
    """The condition of a row still running under this attempt (not ended, not taken over since)."""
    return ((model.id == row_id) & (model.status == "running") & (model.worker == worker)
            & (model.started_at == started_at))


class Heartbeat:
    """Renews a running row's lease every third of the lease while the `with` block runs."""

    def __init__(self, engine: Engine, model: Any, row_id: int, worker: str, started_at: datetime,
                 seconds: float) -> None:
        self.engine, self.model, self.seconds = engine, model, seconds
        self.held = held_by(model, row_id, worker, started_at)
        self.until = started_at + timedelta(seconds=seconds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{model.__tablename__}-{row_id}",
                                        daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def holds(self) -> bool:
        """Whether the lease is certainly still ours: renewed and not lapsed since (checked before a result
        is written, so a worker that fell silent for a whole lease discards what it computed)."""
        return utcnow() < self.until

    def renew(self) -> bool:
        """Extend the lease now; False if the row is no longer ours."""
        now = utcnow()
        until = now + timedelta(seconds=self.seconds)
        with self.engine.begin() as conn:
            renewed = conn.execute(update(self.model).where(self.held).values(lease_until=until, heartbeat_at=now))
        if renewed.rowcount != 1:
            return False
        self.until = until
        return True

    def _beat(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                if not self.renew():
                    log.warning("lost the lease of %s (ended or taken over meanwhile)", self.model.__tablename__)
                    return
            except SQLAlchemyError:  # the database is away: try again next beat (the lease may lapse meanwhile)
                log.warning("heartbeat of %s failed", self.model.__tablename__, exc_info=True)
