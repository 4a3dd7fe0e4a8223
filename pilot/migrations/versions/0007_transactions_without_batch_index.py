"""transactions without the batch_id index

No query looks transactions up by batch (batches are read from ingestion_batches; the conflict
check joins on source and event id), yet every ingested row paid for the index: about 1 us of the
~22 us a row costs on the CSV path into PostgreSQL (bench/ingest.py).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 03:00:00

"""
from typing import Sequence, Union

from alembic import op

revision: str = '0007'
down_revision: Union[str, Sequence[str], None] = '0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.drop_index("ix_transactions_batch_id", table_name="transactions")


def downgrade() -> None:
    op.create_index("ix_transactions_batch_id", "transactions", ["batch_id"])
