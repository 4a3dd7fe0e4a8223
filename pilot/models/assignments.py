"""Sticky assignments of customers to variants, and the layer claims that keep pilots apart."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from pilot.db import Base, utcnow


class Assignment(Base):
    """A customer's variant in a pilot. No foreign keys (migration 0006): written only by
    pilot.assigning from the pilot, customer and store rows it has just read."""

    __tablename__ = "assignments"
    __table_args__ = (UniqueConstraint("pilot_id", "customer_id"),
                      Index("ix_assignments_pilot_variant", "pilot_id", "variant"))

    id: Mapped[int] = mapped_column(primary_key=True)
    pilot_id: Mapped[int]
    customer_id: Mapped[int] = mapped_column(index=True)
    variant: Mapped[str] = mapped_column(String(64))
    stage: Mapped[int]
    store_id: Mapped[int | None]
    assigned_at: Mapped[datetime] = mapped_column(default=utcnow)


class LayerMembership(Base):
    """A customer's claim by one live pilot of a layer; released when that pilot ends."""

    __tablename__ = "layer_memberships"
    __table_args__ = (UniqueConstraint("layer", "customer_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    layer: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[int]
    pilot_id: Mapped[int] = mapped_column(index=True)
