"""People who sign in: users, their sign-in attempts (the rate limit) and one-time password resets."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from pilot.db import Base, utcnow
from pilot.models.stores import Store


class User(Base):
    """A person (or a feed's service user, without a password) with one role; store staff have a store."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(254), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    store_id: Mapped[int | None] = mapped_column(ForeignKey("stores.id"))
    password_hash: Mapped[str | None] = mapped_column(String(300))  # scrypt (pilot.users); None: no sign-in
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    disabled_at: Mapped[datetime | None]

    store: Mapped[Store | None] = relationship(lazy="joined")


class SignInAttempt(Base):
    """One password sign-in, good or not: failures in a window are the rate limit."""

    __tablename__ = "sign_in_attempts"
    __table_args__ = (Index("ix_sign_in_attempts_email_at", "email", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    succeeded: Mapped[bool]


class PasswordReset(Base):
    """A one-time link an admin issued: only the SHA-256 of its secret is kept."""

    __tablename__ = "password_resets"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
