"""store-sized gates (#23): a gate's minimum sample is counted in the pilot's unit

Every stage's gate gets `sample_unit` (its pilot's unit). The stages of store-randomised pilots
whose `min_units_per_arm` is the customer default (1,000, or left out) move to the store default
(3 stores per arm): compared with stores, 1,000 meant no store pilot could ever advance or stop.
A store gate set to another number by hand keeps it. Downgrade drops `sample_unit` and puts the
store defaults back to 1,000.

Revision ID: 0013
Revises: 0012
"""
from collections.abc import Sequence
from typing import Union

import sqlalchemy as sa
from alembic import op

revision: str = '0013'
down_revision: Union[str, Sequence[str], None] = '0012'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

CUSTOMER_DEFAULT = 1000
STORE_DEFAULT = 3

pilots = sa.table('pilots', sa.column('id', sa.Integer()), sa.column('unit', sa.String()))
stages = sa.table('stages', sa.column('id', sa.Integer()), sa.column('pilot_id', sa.Integer()),
                  sa.column('gate', sa.JSON()))


def _rows():
    conn = op.get_bind()
    return conn, conn.execute(sa.select(stages.c.id, stages.c.gate, pilots.c.unit)
                              .join(pilots, pilots.c.id == stages.c.pilot_id)).all()


def upgrade() -> None:
    conn, rows = _rows()
    for stage_id, gate, unit in rows:
        gate = dict(gate or {})
        gate['sample_unit'] = unit
        if unit == 'store' and gate.get('min_units_per_arm', CUSTOMER_DEFAULT) == CUSTOMER_DEFAULT:
            gate['min_units_per_arm'] = STORE_DEFAULT
        conn.execute(stages.update().where(stages.c.id == stage_id).values(gate=gate))


def downgrade() -> None:
    conn, rows = _rows()
    for stage_id, gate, unit in rows:
        gate = dict(gate or {})
        gate.pop('sample_unit', None)
        if unit == 'store' and gate.get('min_units_per_arm') == STORE_DEFAULT:
            gate['min_units_per_arm'] = CUSTOMER_DEFAULT
        conn.execute(stages.update().where(stages.c.id == stage_id).values(gate=gate))
