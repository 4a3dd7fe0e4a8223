"""server-side web sessions (logout ends a session everywhere)

A page login's cookie carries a session secret; this table keeps only its SHA-256 hash, the token
it acts for, and when it started, was last seen, expires and ended. Every page request checks it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 21:45:00

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

from pilot.migrations.tables import at, create_table

revision: str = '0010'
down_revision: Union[str, Sequence[str], None] = '0009'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    create_table(
        "web_sessions",
        sa.Column("session_hash", sa.String(length=64), nullable=False),
        sa.Column("token_id", sa.Integer(), nullable=False),
        at("created_at", False), at("last_seen_at", False), at("expires_at", False), at("ended_at"),
        references=[("token_id", "api_tokens")], unique=[("session_hash",)],
    )
    op.create_index(op.f("ix_web_sessions_token_id"), "web_sessions", ["token_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_web_sessions_token_id"), table_name="web_sessions")
    op.drop_table("web_sessions")
