"""leases for scheduler job runs and analysis runs (a dead worker's claim is taken over)

A job run and an analysis run record who runs them (`worker`), since when (`started_at`) and until
when their claim holds (`lease_until`, renewed by a heartbeat, the last one at `heartbeat_at`). A run
still `running` (or `queued`) after its lease is a lost worker's: the scheduler takes a job's slot
over, and ends an analysis `failed` with a retry (`retry_of`, at most one per lost run). The
(status, lease_until) indexes keep that look-up off the finished rows. Rows unfinished at the upgrade
get the default lease from their start, so the first scheduler pass after it heals the ones stuck
before it.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 21:45:00

"""
from datetime import timedelta
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = '0011'
down_revision: Union[str, Sequence[str], None] = '0010'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

DEFAULT_LEASE = timedelta(seconds=300)  # PILOT_JOB_LEASE_SECONDS' default


def upgrade() -> None:
    with op.batch_alter_table("job_runs") as batch_op:
        batch_op.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_job_runs_status_lease_until", ["status", "lease_until"])
    with op.batch_alter_table("analysis_runs") as batch_op:
        batch_op.add_column(sa.Column("started_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("worker", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("retry_of", sa.Integer(), nullable=True))
        batch_op.create_index("ix_analysis_runs_status_lease_until", ["status", "lease_until"])
        batch_op.create_index("ix_analysis_runs_retry_of", ["retry_of"], unique=True)
    _lease_unfinished("job_runs", "started_at", ("running",))
    _lease_unfinished("analysis_runs", "created_at", ("queued", "running"))


def _lease_unfinished(name: str, since: str, statuses: tuple[str, ...]) -> None:
    """Give unfinished rows the default lease from `since` (in Python: date arithmetic differs by dialect)."""
    table = sa.table(name, sa.column("id", sa.Integer()), sa.column("status", sa.String()),
                     sa.column(since, sa.DateTime(timezone=True)), sa.column("lease_until", sa.DateTime(timezone=True)))
    conn = op.get_bind()
    rows = conn.execute(sa.select(table.c.id, table.c[since]).where(table.c.status.in_(statuses))).all()
    for row_id, started in rows:
        conn.execute(sa.update(table).where(table.c.id == row_id).values(lease_until=started + DEFAULT_LEASE))


def downgrade() -> None:
    with op.batch_alter_table("analysis_runs") as batch_op:
        batch_op.drop_index("ix_analysis_runs_retry_of")
        batch_op.drop_index("ix_analysis_runs_status_lease_until")
        for column in ("retry_of", "heartbeat_at", "lease_until", "worker", "started_at"):
            batch_op.drop_column(column)
    with op.batch_alter_table("job_runs") as batch_op:
        batch_op.drop_index("ix_job_runs_status_lease_until")
        for column in ("heartbeat_at", "lease_until"):
            batch_op.drop_column(column)
