"""Reserved for per-arm verdicts and historical pilots (#28).

Revision ID: 0014
Revises: 0013
"""
from collections.abc import Sequence
from typing import Union

revision: str = '0014'
down_revision: Union[str, Sequence[str], None] = '0013'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
