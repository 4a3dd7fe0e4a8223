"""Planner settings for set-based passes over whole tables on PostgreSQL."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text
from sqlalchemy.engine import Connection


@contextmanager
def set_based_plan(conn: Connection, sorted_groups: bool = False, merge_joins: bool = False) -> Iterator[None]:
    """No nested loops on PostgreSQL for the statements inside (the settings are restored after,
    within the transaction; on an error the transaction rolls back, and the local settings with it).

    For set-based passes that read whole tables (bulk assignment, the analysis unit rows), where hash
    or merge joins are the right plan at any size: statistics taken before a large import or
    assignment (autovacuum has not caught up yet) make the planner expect one row and choose nested
    loops, a million index probes in bulk assignment and a re-aggregation per customer in the
    analysis.

    `sorted_groups`: GROUP BY by sorting, not hashing. For the analysis's per-customer sums, where
    each parallel worker sees nearly every customer: partial hash aggregates do not shrink, spill and
    are hashed again, while sorted partial aggregates merge in order.

    `merge_joins`: join sorted inputs instead of hashing one side. For the analysis when the stage's
    units are most of the customers: the transactions are sorted by customer before the join (as
    the sorted GROUP BY needs them anyway) and merged with the assignments, instead of a random
    probe of a hash table of every unit per transaction. A hash join stays better for a small pilot
    in a large retailer, whose probes drop most transactions before any sort.

    The measurements behind each setting are in docs/architecture.md (Analysis).
    """
    if conn.dialect.name != "postgresql":
        yield
        return
    settings = {"enable_nestloop": "off", **({"enable_hashagg": "off"} if sorted_groups else {}),
                **({"enable_hashjoin": "off"} if merge_joins else {})}
    was = {name: conn.scalar(text("SELECT current_setting(:name)"), {"name": name}) for name in settings}
    for name, value in settings.items():
        conn.execute(text("SELECT set_config(:name, :value, true)"), {"name": name, "value": value})
    yield
    for name, value in was.items():
        conn.execute(text("SELECT set_config(:name, :value, true)"), {"name": name, "value": value})
