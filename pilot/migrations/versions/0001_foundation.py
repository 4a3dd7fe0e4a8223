"""foundation: regions, stores, customers, groups, tokens, audit

Revision ID: 0001
Revises: 
Create Date: 2026-11-25

"""
from typing import Sequence, Union

import sqlalchemy as sa

from pilot.migrations.tables import at, create_table, drop_table

# revision identifiers, used by Alembic.
revision: str = '0001'
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


INDEXES = {
    'audit_events': ('action', 'at', 'entity_type'),
    'stores': ('region_id',),
    'customers': ('home_store_id',),
}


def upgrade() -> None:
    """Upgrade schema."""
    create_table('audit_events',
                 at('at', False),
                 sa.Column('actor', sa.String(length=200), nullable=False),
                 sa.Column('action', sa.String(length=64), nullable=False),
                 sa.Column('entity_type', sa.String(length=64), nullable=False),
                 sa.Column('entity_id', sa.String(length=128), nullable=True),
                 sa.Column('before', sa.JSON(), nullable=True),
                 sa.Column('after', sa.JSON(), nullable=True),
                 indexes=INDEXES['audit_events'])
    create_table('customer_groups',
                 sa.Column('key', sa.String(length=64), nullable=False),
                 sa.Column('name', sa.String(length=200), nullable=False),
                 sa.Column('position', sa.Integer(), nullable=False),
                 sa.Column('rules', sa.JSON(), nullable=False),
                 at('created_at', False),
                 unique=[('key',)])
    create_table('regions',
                 sa.Column('code', sa.String(length=64), nullable=False),
                 sa.Column('name', sa.String(length=200), nullable=False),
                 at('created_at', False),
                 unique=[('code',)])
    create_table('stores',
                 sa.Column('code', sa.String(length=64), nullable=False),
                 sa.Column('name', sa.String(length=200), nullable=False),
                 sa.Column('region_id', sa.Integer(), nullable=False),
                 sa.Column('format', sa.String(length=64), nullable=True),
                 sa.Column('size_sqm', sa.Double(), nullable=True),
                 sa.Column('opening_date', sa.Date(), nullable=True),
                 sa.Column('attributes', sa.JSON(), nullable=False),
                 at('created_at', False), at('updated_at', False),
                 references=[('region_id', 'regions')], unique=[('code',)], indexes=INDEXES['stores'])
    create_table('api_tokens',
                 sa.Column('name', sa.String(length=200), nullable=False),
                 sa.Column('role', sa.String(length=16), nullable=False),
                 sa.Column('store_id', sa.Integer(), nullable=True),
                 sa.Column('token_hash', sa.String(length=64), nullable=False),
                 sa.Column('prefix', sa.String(length=16), nullable=False),
                 at('created_at', False), at('revoked_at'), at('last_used_at'),
                 references=[('store_id', 'stores')], unique=[('token_hash',)])
    create_table('customers',
                 sa.Column('external_id', sa.String(length=128), nullable=False),
                 sa.Column('home_store_id', sa.Integer(), nullable=True),
                 sa.Column('age_band', sa.String(length=16), nullable=True),
                 sa.Column('household_size', sa.Integer(), nullable=True),
                 sa.Column('children', sa.Integer(), nullable=True),
                 sa.Column('attributes', sa.JSON(), nullable=False),
                 at('created_at', False), at('updated_at', False),
                 references=[('home_store_id', 'stores')], unique=[('external_id',)], indexes=INDEXES['customers'])


def downgrade() -> None:
    """Downgrade schema."""
    for table in ('customers', 'api_tokens', 'stores', 'regions', 'customer_groups', 'audit_events'):
        drop_table(table, INDEXES.get(table, ()))
