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

revision: str = '0017'
down_revision: Union[str, Sequence[str], None] = '0016'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def _at(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    with op.batch_alter_table("ingestion_batches") as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(length=16), nullable=False, server_default="transactions"))
    op.create_table(
        "customer_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("store_id", sa.Integer(), nullable=True),
        _at("occurred_at", False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("batch_row", sa.Integer(), nullable=False),
        _at("received_at", False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customer_events")),
        sa.UniqueConstraint("source", "event_id", name=op.f("uq_customer_events_source")),
    )
    op.create_index("ix_customer_events_customer_time", "customer_events", ["customer_id", "occurred_at"])
    op.create_index("ix_customer_events_type_time", "customer_events", ["type", "occurred_at"])
    op.create_table(
        "metric_definitions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.String(length=1000), nullable=False),
        sa.Column("good_direction", sa.String(length=8), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        _at("created_at", False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metric_definitions")),
        sa.UniqueConstraint("key", "version", name=op.f("uq_metric_definitions_key")),
    )


def downgrade() -> None:
    op.drop_table("metric_definitions")
    op.drop_index("ix_customer_events_type_time", table_name="customer_events")
    op.drop_index("ix_customer_events_customer_time", table_name="customer_events")
    op.drop_table("customer_events")
    with op.batch_alter_table("ingestion_batches") as batch_op:
        batch_op.drop_column("kind")
