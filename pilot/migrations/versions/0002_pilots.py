"""programmes, pilots, stages, enrolments

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25

"""
from typing import Sequence, Union

import sqlalchemy as sa

from pilot.migrations.tables import at, create_table, drop_table

# revision identifiers, used by Alembic.
revision: str = '0002'
down_revision: Union[str, Sequence[str], None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


INDEXES = {
    'pilots': ('programme_id', 'state'),
    'variants': ('programme_id',),
    'stages': ('pilot_id',),
    'enrolments': ('pilot_id', ('ix_enrolments_store_active', ['store_id', 'withdrawn_at'])),
}


def upgrade() -> None:
    """Upgrade schema."""
    create_table('programmes',
                 sa.Column('key', sa.String(length=64), nullable=False),
                 sa.Column('name', sa.String(length=200), nullable=False),
                 sa.Column('description', sa.String(length=2000), nullable=False),
                 at('created_at', False),
                 unique=[('key',)])
    create_table('pilots',
                 sa.Column('key', sa.String(length=64), nullable=False),
                 sa.Column('name', sa.String(length=200), nullable=False),
                 sa.Column('programme_id', sa.Integer(), nullable=False),
                 sa.Column('unit', sa.String(length=16), nullable=False),
                 sa.Column('primary_metric', sa.String(length=64), nullable=False),
                 sa.Column('guardrails', sa.JSON(), nullable=False),
                 sa.Column('alpha', sa.Double(), nullable=False),
                 sa.Column('power', sa.Double(), nullable=False),
                 sa.Column('mde', sa.Double(), nullable=False),
                 sa.Column('margin_rate', sa.Double(), nullable=False),
                 sa.Column('layer', sa.String(length=64), nullable=False),
                 sa.Column('salt', sa.String(length=64), nullable=False),
                 sa.Column('state', sa.String(length=16), nullable=False),
                 sa.Column('current_stage', sa.Integer(), nullable=True),
                 at('started_at'), at('ended_at'), at('created_at', False),
                 references=[('programme_id', 'programmes')], unique=[('key',)], indexes=INDEXES['pilots'])
    create_table('variants',
                 sa.Column('programme_id', sa.Integer(), nullable=False),
                 sa.Column('key', sa.String(length=64), nullable=False),
                 sa.Column('name', sa.String(length=200), nullable=False),
                 sa.Column('mechanic', sa.String(length=32), nullable=False),
                 sa.Column('parameters', sa.JSON(), nullable=False),
                 references=[('programme_id', 'programmes')], unique=[('programme_id', 'key')],
                 indexes=INDEXES['variants'])
    create_table('stages',
                 sa.Column('pilot_id', sa.Integer(), nullable=False),
                 sa.Column('position', sa.Integer(), nullable=False),
                 sa.Column('name', sa.String(length=200), nullable=False),
                 sa.Column('store_codes', sa.JSON(), nullable=False),
                 sa.Column('region_codes', sa.JSON(), nullable=False),
                 sa.Column('allocation', sa.JSON(), nullable=False),
                 sa.Column('eligible_groups', sa.JSON(), nullable=True),
                 sa.Column('planned_start', sa.Date(), nullable=True),
                 sa.Column('planned_end', sa.Date(), nullable=True),
                 sa.Column('gate', sa.JSON(), nullable=False),
                 at('started_at'), at('ended_at'),
                 references=[('pilot_id', 'pilots')], unique=[('pilot_id', 'position')], indexes=INDEXES['stages'])
    create_table('enrolments',
                 sa.Column('pilot_id', sa.Integer(), nullable=False),
                 sa.Column('stage_id', sa.Integer(), nullable=False),
                 sa.Column('store_id', sa.Integer(), nullable=False),
                 sa.Column('arm', sa.String(length=64), nullable=True),
                 at('enrolled_at', False), at('withdrawn_at'),
                 sa.Column('reason', sa.String(length=500), nullable=True),
                 references=[('pilot_id', 'pilots'), ('stage_id', 'stages'), ('store_id', 'stores')],
                 indexes=INDEXES['enrolments'])


def downgrade() -> None:
    """Downgrade schema."""
    for table in ('enrolments', 'stages', 'variants', 'pilots', 'programmes'):
        drop_table(table, INDEXES.get(table, ()))
