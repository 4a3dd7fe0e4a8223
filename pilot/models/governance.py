"""Governance records: the analysis plan's versions, approvals, webhooks and their delivery outbox."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from pilot.db import Base, utcnow


class AnalysisPlan(Base):
    """One version of a pilot's pre-registered analysis plan (1: locked at the start; later: amendments)."""

    __tablename__ = "analysis_plans"
    __table_args__ = (UniqueConstraint("pilot_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    pilot_id: Mapped[int] = mapped_column(ForeignKey("pilots.id"))
    version: Mapped[int]
    plan: Mapped[dict[str, Any]] = mapped_column(default=dict)
    reason: Mapped[str | None] = mapped_column(String(1000))
    actor: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Approval(Base):
    """A lifecycle action waiting for a second person (pilot setting `approval: second_person`)."""

    __tablename__ = "approvals"
    __table_args__ = (Index("ix_approvals_pilot_id_status", "pilot_id", "status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    pilot_id: Mapped[int] = mapped_column(ForeignKey("pilots.id"))
    action: Mapped[str] = mapped_column(String(16))
    needs: Mapped[list[Any]] = mapped_column(default=list)  # why: override, against_recommendation, rollback
    request: Mapped[dict[str, Any]] = mapped_column(default=dict)  # reason, override, the unmet gate
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | approved | rejected
    requested_by: Mapped[str] = mapped_column(String(200))
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_by: Mapped[str | None] = mapped_column(String(200))
    decided_at: Mapped[datetime | None]
    decision_reason: Mapped[str | None] = mapped_column(String(1000))


class Webhook(Base):
    """A receiver of events; its signing secret is derived from the app's secret key and `secret_salt`."""

    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(String(2000))
    events: Mapped[list[Any]] = mapped_column(default=list)
    secret_salt: Mapped[str] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(String(200))
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    disabled_at: Mapped[datetime | None]


class WebhookDelivery(Base):
    """One event for one webhook (the outbox row), leased while it is sent; every attempt is logged."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),
                      Index("ix_webhook_deliveries_webhook_id", "webhook_id"))

    id: Mapped[int] = mapped_column(primary_key=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id"))
    event: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(default=0)
    attempt_log: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease_until: Mapped[datetime | None]
    worker: Mapped[str | None] = mapped_column(String(200))
    delivered_at: Mapped[datetime | None]
