"""Programmes and their variants."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from pilot.db import Base, utcnow


class Programme(Base):
    __tablename__ = "programmes"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(String(2000), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    variants: Mapped[list[Variant]] = relationship(back_populates="programme", order_by="Variant.id",
                                                   cascade="all, delete-orphan", lazy="selectin")


class Variant(Base):
    __tablename__ = "variants"
    __table_args__ = (UniqueConstraint("programme_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    programme_id: Mapped[int] = mapped_column(ForeignKey("programmes.id"), index=True)
    key: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    mechanic: Mapped[str] = mapped_column(String(32))
    parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)

    programme: Mapped[Programme] = relationship(back_populates="variants")
