"""Pilots, their stages and store enrolments."""
from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from pilot.db import Base, utcnow
from pilot.models.programmes import Programme
from pilot.models.stores import Store

STATES = ("draft", "running", "paused", "completed", "rolled_back", "cancelled")
LIVE_STATES = ("running", "paused")


class Pilot(Base):
    __tablename__ = "pilots"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    programme_id: Mapped[int] = mapped_column(ForeignKey("programmes.id"), index=True)
    unit: Mapped[str] = mapped_column(String(16))
    primary_metric: Mapped[str] = mapped_column(String(64))
    guardrails: Mapped[list[Any]] = mapped_column(default=list)
    alpha: Mapped[float] = mapped_column(default=0.05)
    power: Mapped[float] = mapped_column(default=0.8)
    mde: Mapped[float] = mapped_column(default=0.02)
    margin_rate: Mapped[float] = mapped_column(default=0.3)
    layer: Mapped[str] = mapped_column(String(64), default="default")
    salt: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default="draft", index=True)
    current_stage: Mapped[int | None]
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    imported_at: Mapped[datetime | None]  # a pilot that ran elsewhere, brought in (pilot.pilot_import)
    # governance (pilot.governance): who must approve overrides, pilots declared independent of this one,
    # the analysis plan's version (None until the start locks version 1)
    approval: Mapped[str] = mapped_column(String(16), default="none", server_default="none")
    independent_of: Mapped[list[Any]] = mapped_column(default=list, server_default="[]")
    plan_version: Mapped[int | None]

    programme: Mapped[Programme] = relationship(lazy="joined")
    stages: Mapped[list[Stage]] = relationship(back_populates="pilot", order_by="Stage.position",
                                               cascade="all, delete-orphan", lazy="selectin")

    def stage(self, position: int | None) -> Stage | None:
        return next((s for s in self.stages if s.position == position), None)


class Stage(Base):
    __tablename__ = "stages"
    __table_args__ = (UniqueConstraint("pilot_id", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    pilot_id: Mapped[int] = mapped_column(ForeignKey("pilots.id"), index=True)
    position: Mapped[int]
    name: Mapped[str] = mapped_column(String(200))
    store_codes: Mapped[list[Any]] = mapped_column(default=list)
    region_codes: Mapped[list[Any]] = mapped_column(default=list)
    allocation: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # the weights of a running stage before each change: [{"until": ISO time, "allocation": {...}}]
    allocation_log: Mapped[list[Any]] = mapped_column(default=list, server_default="[]")
    eligible_groups: Mapped[list[Any] | None] = mapped_column(default=None)
    planned_start: Mapped[date | None]
    planned_end: Mapped[date | None]
    gate: Mapped[dict[str, Any]] = mapped_column(default=dict)
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]

    pilot: Mapped[Pilot] = relationship(back_populates="stages")


class Enrolment(Base):
    __tablename__ = "enrolments"
    __table_args__ = (Index("ix_enrolments_store_active", "store_id", "withdrawn_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    pilot_id: Mapped[int] = mapped_column(ForeignKey("pilots.id"), index=True)
    stage_id: Mapped[int] = mapped_column(ForeignKey("stages.id"))
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id"))
    arm: Mapped[str | None] = mapped_column(String(64))
    enrolled_at: Mapped[datetime] = mapped_column(default=utcnow)
    withdrawn_at: Mapped[datetime | None]
    reason: Mapped[str | None] = mapped_column(String(500))

    store: Mapped[Store] = relationship(lazy="joined")
    stage: Mapped[Stage] = relationship(lazy="joined")
    pilot: Mapped[Pilot] = relationship(lazy="joined")
