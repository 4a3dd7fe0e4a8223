"""assignments and layer memberships

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25

"""
from typing import Sequence, Union

import sqlalchemy as sa

from pilot.migrations.tables import at, create_table, drop_table

# revision identifiers, used by Alembic.
revision: str = '0003'
down_revision: Union[str, Sequence[str], None] = '0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


INDEXES = {
    'assignments': ('customer_id', ('ix_assignments_pilot_variant', ['pilot_id', 'variant'])),
    'layer_memberships': ('pilot_id',),
}


def upgrade() -> None:
    """Upgrade schema."""
    create_table('assignments',
                 sa.Column('pilot_id', sa.Integer(), nullable=False),
                 sa.Column('customer_id', sa.Integer(), nullable=False),
                 sa.Column('variant', sa.String(length=64), nullable=False),
                 sa.Column('stage', sa.Integer(), nullable=False),
                 sa.Column('store_id', sa.Integer(), nullable=True),
                 at('assigned_at', False),
                 references=[('customer_id', 'customers'), ('pilot_id', 'pilots'), ('store_id', 'stores')],
                 unique=[('pilot_id', 'customer_id')], indexes=INDEXES['assignments'])
    create_table('layer_memberships',
                 sa.Column('layer', sa.String(length=64), nullable=False),
                 sa.Column('customer_id', sa.Integer(), nullable=False),
                 sa.Column('pilot_id', sa.Integer(), nullable=False),
                 references=[('customer_id', 'customers'), ('pilot_id', 'pilots')],
                 unique=[('layer', 'customer_id')], indexes=INDEXES['layer_memberships'])


def downgrade() -> None:
    """Downgrade schema."""
    for table in ('layer_memberships', 'assignments'):
        drop_table(table, INDEXES[table])
