"""Outcomes: transactions from the retailer's feed, and the ingestion batches that brought them."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, Numeric, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from pilot.db import Base, utcnow

BIGID = BigInteger().with_variant(Integer, "sqlite")
MONEY = Numeric(16, 4, asdecimal=False)


class IngestionBatch(Base):
    """One delivery of rows (JSON batch, CSV upload or CLI file) with what became of them."""

    __tablename__ = "ingestion_batches"

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(200))
    method: Mapped[str] = mapped_column(String(16))  # json | csv | cli
    kind: Mapped[str] = mapped_column(String(16), default="transactions")  # transactions | events (#25)
    on_error: Mapped[str] = mapped_column(String(16))  # reject_batch | skip_rows
    status: Mapped[str] = mapped_column(String(16))  # running | accepted | rejected | failed
    rows: Mapped[int] = mapped_column(default=0)
    accepted: Mapped[int] = mapped_column(default=0)
    duplicates: Mapped[int] = mapped_column(default=0)
    conflicts: Mapped[int] = mapped_column(default=0)
    rejected: Mapped[int] = mapped_column(default=0)
    customers_created: Mapped[int] = mapped_column(default=0)
    errors: Mapped[list[Any]] = mapped_column(default=list)
    # what the rows concerned: stores, customers, event ids, time window (pilot.data_quality.BatchScope)
    scope: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    started_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    # while running: when the batch last said it was alive (pilot.ingestion.fail_stale_batches)
    heartbeat_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class Transaction(Base):
    """A purchase or refund; (source, event_id) is unique, so a replay adds nothing.

    No foreign keys on purpose: the one writer (pilot.ingestion) resolves customer and store ids by
    join, and PostgreSQL's per-row foreign-key triggers took half of the insert time. Deleting a
    store with transactions is refused in code (pilot.stores.delete_store).
    """

    __tablename__ = "transactions"
    __table_args__ = (UniqueConstraint("source", "event_id"),
                      Index("ix_transactions_customer_time", "customer_id", "occurred_at"),
                      Index("ix_transactions_store_time", "store_id", "occurred_at"),
                      Index("ix_transactions_occurred_at", "occurred_at"))

    id: Mapped[int] = mapped_column(BIGID, primary_key=True)
    source: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[str] = mapped_column(String(128))
    customer_id: Mapped[int]
    store_id: Mapped[int]
    occurred_at: Mapped[datetime]
    type: Mapped[str] = mapped_column(String(8))  # sale | refund
    amount: Mapped[float] = mapped_column(MONEY)
    items: Mapped[int] = mapped_column(default=0)
    discount_cost: Mapped[float | None] = mapped_column(MONEY)
    points_issued: Mapped[int] = mapped_column(default=0)
    points_redeemed: Mapped[int] = mapped_column(default=0)
    channel: Mapped[str] = mapped_column(String(16), default="store")
    batch_id: Mapped[int]  # no index: nothing looks rows up by batch (migration 0007)
    batch_row: Mapped[int]
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
