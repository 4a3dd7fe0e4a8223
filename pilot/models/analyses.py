"""Analysis runs (reproducible snapshots with their recommendation) and scheduler job runs."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from pilot.db import Base, utcnow


class AnalysisRun(Base):
    """One analysis of a pilot stage; while queued or running it holds a lease (see pilot.leases)."""

    __tablename__ = "analysis_runs"
    __table_args__ = (Index("ix_analysis_runs_status_lease_until", "status", "lease_until"),
                      Index("ix_analysis_runs_retry_of", "retry_of", unique=True))

    id: Mapped[int] = mapped_column(primary_key=True)
    pilot_id: Mapped[int] = mapped_column(ForeignKey("pilots.id"), index=True)
    stage: Mapped[int]
    status: Mapped[str] = mapped_column(String(16))  # queued | running | done | failed
    requested_by: Mapped[str] = mapped_column(String(200))
    cutoff: Mapped[datetime]
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    results: Mapped[dict[str, Any]] = mapped_column(default=dict)
    recommendation: Mapped[dict[str, Any]] = mapped_column(default=dict)
    decision: Mapped[str | None] = mapped_column(String(16))
    timings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # what computed the aggregates: database (Pilot's own) or spark (PILOT_ANALYSIS_ENGINE; migration 0015)
    engine: Mapped[str] = mapped_column(String(16), default="database", server_default="database")
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    worker: Mapped[str | None] = mapped_column(String(200))  # host:pid that runs it (or will)
    lease_until: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    retry_of: Mapped[int | None]  # the lost run this one retries (no foreign key: only the scheduler writes it)
    finished_at: Mapped[datetime | None]
    applied_at: Mapped[datetime | None]
    applied_by: Mapped[str | None] = mapped_column(String(200))


class JobRun(Base):
    """One firing of a scheduler job; (job, slot) is unique, so two schedulers run it once."""

    __tablename__ = "job_runs"
    __table_args__ = (UniqueConstraint("job", "slot"),
                      Index("ix_job_runs_status_lease_until", "status", "lease_until"))

    id: Mapped[int] = mapped_column(primary_key=True)
    job: Mapped[str] = mapped_column(String(64))
    slot: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # running | done | failed
    worker: Mapped[str] = mapped_column(String(200))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    started_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    lease_until: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
