"""What the migrations build tables with: the id column, timestamps, and the naming convention's
pk_/fk_/uq_/ix_ names, so a revision states only what is its own.

Revisions are history: what a helper here emits must never change (that would change what an old
revision did to a database); a revision that needs something else gets a new helper or says it itself.
"""
from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from alembic import op

# An index: a column name (an index on it alone, named ix_<table>_<column> by the convention), or
# (name, columns) for an index named by hand.
Index = str | tuple[str, list[str]]


def at(name: str, nullable: bool = True) -> sa.Column:
    """A timezone-aware timestamp column."""
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def create_table(name: str, *columns: sa.Column, references: Iterable[tuple[str, str]] = (),
                 unique: Iterable[tuple[str, ...]] = (), indexes: Iterable[Index] = (),
                 id_type: sa.types.TypeEngine | None = None) -> None:
    """A table: an integer `id` primary key, the columns, a foreign key per (column, table it refers to),
    a unique constraint per tuple of columns, then its indexes."""
    op.create_table(name, sa.Column("id", id_type if id_type is not None else sa.Integer(), nullable=False), *columns,
                    *(sa.ForeignKeyConstraint([column], [f"{referred}.id"], name=op.f(f"fk_{name}_{column}_{referred}"))
                      for column, referred in references),
                    sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{name}")),
                    *(sa.UniqueConstraint(*key, name=op.f(f"uq_{name}_{key[0]}")) for key in unique))
    indexes = list(indexes)
    if indexes:
        with op.batch_alter_table(name, schema=None) as batch_op:
            for index in indexes:
                index_name, index_columns = _index(name, index)
                batch_op.create_index(index_name, index_columns, unique=False)


def drop_table(name: str, indexes: Iterable[Index] = ()) -> None:
    """Drop a table that create_table made, its indexes first (newest first)."""
    indexes = list(indexes)
    if indexes:
        with op.batch_alter_table(name, schema=None) as batch_op:
            for index in reversed(indexes):
                batch_op.drop_index(_index(name, index)[0])
    op.drop_table(name)


def _index(table: str, index: Index) -> tuple[str, list[str]]:
    if isinstance(index, str):
        return op.f(f"ix_{table}_{index}"), [index]
    return index
