"""Sticky assignments of customers to variants, and the layer claims that keep pilots apart."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from pilot.db import Base, utcnow


class Assignment(Base):
    """A customer's variant in a pilot. No foreign keys (migration 0006): written only by
    pilot.assignment from the pilot, customer and store rows it has just read."""

    __tablename__ = "assignments"
    __table_args__ = (Index("ix_assignments_pilot_variant", "pilot_id", "variant"),)

    # one per pilot and customer: that is the key (migration 0009; no surrogate id)
    pilot_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    customer_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    variant: Mapped[str] = mapped_column(String(64))
    stage: Mapped[int]
    store_id: Mapped[int | None]
    assigned_at: Mapped[datetime] = mapped_column(default=utcnow)


class LayerMembership(Base):
    """A customer's claim by one live pilot of a layer; released when that pilot ends."""

    __tablename__ = "layer_memberships"

    # one live pilot per layer and customer: that is the key (migration 0009; no surrogate id)
    layer: Mapped[str] = mapped_column(String(64), primary_key=True)
    customer_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    pilot_id: Mapped[int] = mapped_column(index=True)
