"""analysis engine (#26): which engine computed an analysis run

`analysis_runs.engine`: `database` (Pilot's own SQLite or PostgreSQL, every run before this one) or
`spark` (the retailer's transactions in a data lake, pilot.spark_engine; PILOT_ANALYSIS_ENGINE).

Revision ID: 0015
Revises: 0014
"""
from collections.abc import Sequence
from typing import Union

import sqlalchemy as sa
from alembic import op

revision: str = '0015'
down_revision: Union[str, Sequence[str], None] = '0014'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('analysis_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('engine', sa.String(length=16), nullable=False, server_default='database'))


def downgrade() -> None:
    with op.batch_alter_table('analysis_runs', schema=None) as batch_op:
        batch_op.drop_column('engine')
