"""API tokens: only a SHA-256 hash of the secret is stored."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from pilot.db import Base, utcnow
from pilot.models.stores import Store

ROLES = ("admin", "manager", "analyst", "store", "feed")


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    store_id: Mapped[int | None] = mapped_column(ForeignKey("stores.id"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)  # the person (pilot.users)

    store: Mapped[Store | None] = relationship(lazy="joined")
