"""ingestion batches recorded when they start, with a heartbeat (a batch whose worker died ends failed)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 21:45:00

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = '0012'
down_revision: Union[str, Sequence[str], None] = '0011'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('ingestion_batches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('ingestion_batches', schema=None) as batch_op:
        batch_op.drop_column('heartbeat_at')
