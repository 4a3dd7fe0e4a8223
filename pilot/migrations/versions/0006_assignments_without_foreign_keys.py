"""assignments and layer claims without foreign keys

Bulk assignment writes two rows per customer (claim, assignment); five foreign-key triggers per
customer doubled its time, and on the till path every insert took a FOR KEY SHARE lock on the
same pilots row. Both tables are written only by pilot.assigning from rows it has just read;
customers are never deleted, pilots only as drafts (which have no assignments), and a store is
held by its enrolments' foreign key. The transactions table made the same choice (0004).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 09:40:00

"""
from typing import Sequence, Union

from alembic import op

revision: str = '0006'
down_revision: Union[str, Sequence[str], None] = '0005'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

KEYS = {
    "assignments": (("pilot_id", "pilots"), ("customer_id", "customers"), ("store_id", "stores")),
    "layer_memberships": (("customer_id", "customers"), ("pilot_id", "pilots")),
}


def upgrade() -> None:
    for table, keys in KEYS.items():
        with op.batch_alter_table(table) as batch_op:
            for column, referred in keys:
                batch_op.drop_constraint(f"fk_{table}_{column}_{referred}", type_="foreignkey")


def downgrade() -> None:
    for table, keys in KEYS.items():
        with op.batch_alter_table(table) as batch_op:
            for column, referred in keys:
                batch_op.create_foreign_key(f"fk_{table}_{column}_{referred}", referred, [column], ["id"])
