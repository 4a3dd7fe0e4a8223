"""assignments and layer claims keyed by what identifies them, without surrogate ids

An assignment is one (pilot, customer), a layer claim one (layer, customer): those unique keys
become the primary keys, and the surrogate ids (read by nothing) go, with the customer-only index
of assignments (every lookup names the pilot). Each new assignment at the till or in bulk writes
three index entries fewer.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26 02:30:00

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = '0009'
down_revision: Union[str, Sequence[str], None] = '0008'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

KEYS = {"assignments": ("pilot_id", "customer_id"), "layer_memberships": ("layer", "customer_id")}
UNIQUE = {"assignments": "uq_assignments_pilot_id", "layer_memberships": "uq_layer_memberships_layer"}


def upgrade() -> None:
    op.drop_index("ix_assignments_customer_id", table_name="assignments")
    for table, key in KEYS.items():
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_constraint(UNIQUE[table], type_="unique")
            batch_op.drop_constraint(f"pk_{table}", type_="primary")
            batch_op.drop_column("id")
            batch_op.create_primary_key(f"pk_{table}", list(key))


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table, key in KEYS.items():
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_constraint(f"pk_{table}", type_="primary")
            batch_op.create_unique_constraint(UNIQUE[table], list(key))
            if sqlite:  # the table is copied: an INTEGER PRIMARY KEY numbers the copied rows itself
                batch_op.add_column(sa.Column("id", sa.Integer(), nullable=False))
                batch_op.create_primary_key(f"pk_{table}", ["id"])
        if not sqlite:
            op.add_column(table, sa.Column("id", sa.Integer(), sa.Identity(), nullable=False))
            op.create_primary_key(f"pk_{table}", table, ["id"])
    op.create_index("ix_assignments_customer_id", "assignments", ["customer_id"])
