"""customer events and metric definitions (#25)

`customer_events`: the events feed (survey answers, app sessions, referrals, complaints…), unique on
(source, event_id) like transactions and, like them, without foreign keys (the one writer resolves ids).
`ingestion_batches.kind`: which rows a batch brought (transactions | events).
`metric_definitions`: versioned definitions of metrics over events or transactions; (key, version) unique.

Revision ID: 0017
Revises: 0016
"""
from collections.abc import Sequence
from typing import Union

import sqlalchemy as sa
from alembic import op

from pilot.migrations.tables import at, create_table, drop_table

revision: str = '0017'
down_revision: Union[str, Sequence[str], None] = '0016'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


EVENT_INDEXES = [("ix_customer_events_customer_time", ["customer_id", "occurred_at"]),
                 ("ix_customer_events_type_time", ["type", "occurred_at"])]


def upgrade() -> None:
    with op.batch_alter_table("ingestion_batches") as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(length=16), nullable=False, server_default="transactions"))
    create_table(
        "customer_events",
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("store_id", sa.Integer(), nullable=True),
        at("occurred_at", False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("batch_row", sa.Integer(), nullable=False),
        at("received_at", False),
        unique=[("source", "event_id")], indexes=EVENT_INDEXES,
        id_type=sa.BigInteger().with_variant(sa.Integer(), "sqlite"))
    create_table(
        "metric_definitions",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.String(length=1000), nullable=False),
        sa.Column("good_direction", sa.String(length=8), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        at("created_at", False),
        unique=[("key", "version")])


def downgrade() -> None:
    drop_table("metric_definitions")
    drop_table("customer_events", indexes=EVENT_INDEXES)
    with op.batch_alter_table("ingestion_batches") as batch_op:
        batch_op.drop_column("kind")
