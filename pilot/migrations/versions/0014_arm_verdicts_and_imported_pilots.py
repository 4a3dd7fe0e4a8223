"""per-arm verdicts and historical pilots (#28): what a batch concerned, and imported pilots

`ingestion_batches.scope`: the stores, customers, event ids and time window of a batch's rows
(what a failed or rejected batch leaves missing, pilot.data_quality). `pilots.imported_at`: when a
pilot that ran elsewhere was brought in (pilot.pilot_import); null for a pilot run live in Pilot.
Per-arm verdicts need no schema: they are part of a run's stored results.

Revision ID: 0014
Revises: 0013
"""
from collections.abc import Sequence
from typing import Union

import sqlalchemy as sa
from alembic import op

revision: str = '0014'
down_revision: Union[str, Sequence[str], None] = '0013'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('ingestion_batches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('scope', sa.JSON(), nullable=True))
    with op.batch_alter_table('pilots', schema=None) as batch_op:
        batch_op.add_column(sa.Column('imported_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('pilots', schema=None) as batch_op:
        batch_op.drop_column('imported_at')
    with op.batch_alter_table('ingestion_batches', schema=None) as batch_op:
        batch_op.drop_column('scope')
