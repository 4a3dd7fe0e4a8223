"""analysis runs and job runs

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 06:36:05.416361

"""
from typing import Sequence, Union

import sqlalchemy as sa

from pilot.migrations.tables import at, create_table, drop_table

# revision identifiers, used by Alembic.
revision: str = '0005'
down_revision: Union[str, Sequence[str], None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


INDEXES = {'job_runs': ('started_at',), 'analysis_runs': ('pilot_id',)}


def upgrade() -> None:
    """Upgrade schema."""
    create_table('job_runs',
                 sa.Column('job', sa.String(length=64), nullable=False),
                 sa.Column('slot', sa.String(length=64), nullable=False),
                 sa.Column('status', sa.String(length=16), nullable=False),
                 sa.Column('worker', sa.String(length=200), nullable=False),
                 sa.Column('detail', sa.JSON(), nullable=False),
                 at('started_at', False), at('finished_at'),
                 unique=[('job', 'slot')], indexes=INDEXES['job_runs'])
    create_table('analysis_runs',
                 sa.Column('pilot_id', sa.Integer(), nullable=False),
                 sa.Column('stage', sa.Integer(), nullable=False),
                 sa.Column('status', sa.String(length=16), nullable=False),
                 sa.Column('requested_by', sa.String(length=200), nullable=False),
                 at('cutoff', False),
                 *(sa.Column(name, sa.JSON(), nullable=False) for name in ('config', 'counts', 'results', 'recommendation')),
                 sa.Column('decision', sa.String(length=16), nullable=True),
                 sa.Column('timings', sa.JSON(), nullable=False),
                 sa.Column('error', sa.Text(), nullable=True),
                 at('created_at', False), at('finished_at'), at('applied_at'),
                 sa.Column('applied_by', sa.String(length=200), nullable=True),
                 references=[('pilot_id', 'pilots')], indexes=INDEXES['analysis_runs'])


def downgrade() -> None:
    """Downgrade schema."""
    for table in ('analysis_runs', 'job_runs'):
        drop_table(table, INDEXES[table])
