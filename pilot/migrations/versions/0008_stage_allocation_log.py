"""stages.allocation_log: the weights a running stage had before each change

A running stage's weights may change (a ramp from 90/10 to 50/50, an arm stopped with weight 0).
Units keep the arm they were assigned under the weights of their time, so the sample-ratio check
has to expect each period's units to follow that period's weights, not today's.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 02:20:00

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: Union[str, Sequence[str], None] = '0007'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table("stages") as batch_op:
        batch_op.add_column(sa.Column("allocation_log", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("stages") as batch_op:
        batch_op.drop_column("allocation_log")
