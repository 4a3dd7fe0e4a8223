"""governance (#24): users, the analysis plan's versions, approvals, overlap declarations, webhooks

`users` sign in with a password (scrypt hash) and own API tokens (`api_tokens.user_id`); failed and
good sign-ins are counted per e-mail (`sign_in_attempts`, the rate limit) and an admin issues one-time
reset links (`password_resets`, only a hash). A pilot has an `approval` setting (`none` |
`second_person`), the pilots it is declared `independent_of`, and its analysis plan's version
(`plan_version`; each version in `analysis_plans`). `approvals` hold actions waiting for a second
person. `webhooks` (a salt: the signing secret is derived from the app's secret key, never stored)
and their outbox `webhook_deliveries` (each delivery leased while it is sent, its attempts logged).

Revision ID: 0016
Revises: 0015
"""
from collections.abc import Sequence
from typing import Union

import sqlalchemy as sa
from alembic import op

from pilot.migrations.tables import at, create_table

revision: str = '0016'
down_revision: Union[str, Sequence[str], None] = '0015'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    create_table(
        "users",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("store_id", sa.Integer(), nullable=True),
        sa.Column("password_hash", sa.String(length=300), nullable=True),
        at("created_at", False), at("disabled_at"),
        references=[("store_id", "stores")], unique=[("email",)],
    )
    create_table(
        "sign_in_attempts",
        sa.Column("email", sa.String(length=254), nullable=False),
        at("at", False),
        sa.Column("succeeded", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_sign_in_attempts_email_at", "sign_in_attempts", ["email", "at"])
    create_table(
        "password_resets",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        at("created_at", False), at("expires_at", False), at("used_at"),
        references=[("user_id", "users")], unique=[("token_hash",)],
    )
    with op.batch_alter_table("api_tokens") as batch_op:
        batch_op.add_column(sa.Column("user_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(op.f("fk_api_tokens_user_id_users"), "users", ["user_id"], ["id"])
        batch_op.create_index(op.f("ix_api_tokens_user_id"), ["user_id"])
    with op.batch_alter_table("pilots") as batch_op:
        batch_op.add_column(sa.Column("approval", sa.String(length=16), nullable=False, server_default="none"))
        batch_op.add_column(sa.Column("independent_of", sa.JSON(), nullable=False, server_default="[]"))
        batch_op.add_column(sa.Column("plan_version", sa.Integer(), nullable=True))
    create_table(
        "analysis_plans",
        sa.Column("pilot_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("plan", sa.JSON(), nullable=False),
        sa.Column("reason", sa.String(length=1000), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=False),
        at("created_at", False),
        references=[("pilot_id", "pilots")], unique=[("pilot_id", "version")],
    )
    create_table(
        "approvals",
        sa.Column("pilot_id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("needs", sa.JSON(), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        at("requested_at", False),
        sa.Column("decided_by", sa.String(length=200), nullable=True),
        at("decided_at"),
        sa.Column("decision_reason", sa.String(length=1000), nullable=True),
        references=[("pilot_id", "pilots")],
    )
    op.create_index("ix_approvals_pilot_id_status", "approvals", ["pilot_id", "status"])
    create_table(
        "webhooks",
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("secret_salt", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(length=200), nullable=True),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        at("created_at", False), at("disabled_at"),
    )
    create_table(
        "webhook_deliveries",
        sa.Column("webhook_id", sa.Integer(), nullable=False),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("attempt_log", sa.JSON(), nullable=False),
        at("created_at", False), at("next_attempt_at", False), at("lease_until"),
        sa.Column("worker", sa.String(length=200), nullable=True),
        at("delivered_at"),
        references=[("webhook_id", "webhooks")],
    )
    op.create_index("ix_webhook_deliveries_status_next", "webhook_deliveries", ["status", "next_attempt_at"])
    op.create_index("ix_webhook_deliveries_webhook_id", "webhook_deliveries", ["webhook_id"])


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    op.drop_table("webhooks")
    op.drop_table("approvals")
    op.drop_table("analysis_plans")
    with op.batch_alter_table("pilots") as batch_op:
        batch_op.drop_column("plan_version")
        batch_op.drop_column("independent_of")
        batch_op.drop_column("approval")
    with op.batch_alter_table("api_tokens") as batch_op:
        batch_op.drop_index(op.f("ix_api_tokens_user_id"))
        batch_op.drop_constraint(op.f("fk_api_tokens_user_id_users"), type_="foreignkey")
        batch_op.drop_column("user_id")
    op.drop_table("password_resets")
    op.drop_index("ix_sign_in_attempts_email_at", table_name="sign_in_attempts")
    op.drop_table("sign_in_attempts")
    op.drop_table("users")
