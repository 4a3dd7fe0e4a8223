"""Customer events (the loyalty signals beyond the till) and the versioned metric definitions over them."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from pilot.db import Base, utcnow
from pilot.models.transactions import BIGID


class CustomerEvent(Base):
    """One event of a customer (a survey answer, an app session, a referral…); (source, event_id) is unique.

    No foreign keys, like transactions: the one writer (pilot.ingestion) resolves customer and store ids.
    """

    __tablename__ = "customer_events"
    __table_args__ = (UniqueConstraint("source", "event_id"),
                      Index("ix_customer_events_customer_time", "customer_id", "occurred_at"),
                      Index("ix_customer_events_type_time", "type", "occurred_at"))

    id: Mapped[int] = mapped_column(BIGID, primary_key=True)
    source: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[str] = mapped_column(String(128))
    customer_id: Mapped[int]
    store_id: Mapped[int | None]
    occurred_at: Mapped[datetime]
    type: Mapped[str] = mapped_column(String(64))
    value: Mapped[float | None] = mapped_column(Float)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    batch_id: Mapped[int]
    batch_row: Mapped[int]
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class MetricDefinitionVersion(Base):
    """One version of a defined metric; the current definition of a key is its highest version."""

    __tablename__ = "metric_definitions"
    __table_args__ = (UniqueConstraint("key", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64))
    version: Mapped[int]
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(String(1000), default="")
    good_direction: Mapped[str] = mapped_column(String(8))  # up | down
    kind: Mapped[str] = mapped_column(String(16))  # mean | proportion | ratio
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    actor: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
