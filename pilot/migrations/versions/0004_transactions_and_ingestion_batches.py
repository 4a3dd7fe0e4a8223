"""transactions and ingestion batches

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 06:21:02.232066

"""
from typing import Sequence, Union

import sqlalchemy as sa

from pilot.migrations.tables import at, create_table, drop_table

# revision identifiers, used by Alembic.
revision: str = '0004'
down_revision: Union[str, Sequence[str], None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


AMOUNT = sa.Numeric(precision=16, scale=4, asdecimal=False)
INDEXES = {
    'ingestion_batches': ('started_at',),
    'transactions': ('batch_id', ('ix_transactions_customer_time', ['customer_id', 'occurred_at']),
                     ('ix_transactions_occurred_at', ['occurred_at']),
                     ('ix_transactions_store_time', ['store_id', 'occurred_at'])),
}


def upgrade() -> None:
    """Upgrade schema."""
    create_table('ingestion_batches',
                 sa.Column('source', sa.String(length=64), nullable=False),
                 sa.Column('actor', sa.String(length=200), nullable=False),
                 sa.Column('method', sa.String(length=16), nullable=False),
                 sa.Column('on_error', sa.String(length=16), nullable=False),
                 sa.Column('status', sa.String(length=16), nullable=False),
                 *(sa.Column(count, sa.Integer(), nullable=False)
                   for count in ('rows', 'accepted', 'duplicates', 'conflicts', 'rejected', 'customers_created')),
                 sa.Column('errors', sa.JSON(), nullable=False),
                 at('started_at', False), at('finished_at'),
                 indexes=INDEXES['ingestion_batches'])
    create_table('transactions',
                 sa.Column('source', sa.String(length=64), nullable=False),
                 sa.Column('event_id', sa.String(length=128), nullable=False),
                 sa.Column('customer_id', sa.Integer(), nullable=False),
                 sa.Column('store_id', sa.Integer(), nullable=False),
                 at('occurred_at', False),
                 sa.Column('type', sa.String(length=8), nullable=False),
                 sa.Column('amount', AMOUNT, nullable=False),
                 sa.Column('items', sa.Integer(), nullable=False),
                 sa.Column('discount_cost', AMOUNT, nullable=True),
                 sa.Column('points_issued', sa.Integer(), nullable=False),
                 sa.Column('points_redeemed', sa.Integer(), nullable=False),
                 sa.Column('channel', sa.String(length=16), nullable=False),
                 sa.Column('batch_id', sa.Integer(), nullable=False),
                 sa.Column('batch_row', sa.Integer(), nullable=False),
                 at('received_at', False),
                 unique=[('source', 'event_id')], indexes=INDEXES['transactions'],
                 id_type=sa.BigInteger().with_variant(sa.Integer(), 'sqlite'))


def downgrade() -> None:
    """Downgrade schema."""
    for table in ('transactions', 'ingestion_batches'):
        drop_table(table, INDEXES[table])
