"""Shared by the Spark tests: a session (skipped cleanly without pyspark or Java), a lake written from
Pilot's own transactions, pilots of both units, and exact comparisons of cubes and runs."""
from __future__ import annotations

import math
import os
import shutil
import socket
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from pilot import analysis_runs
from pilot.aggregation import Cube, DatabaseRunner, customer_cube, store_cube
from pilot.auth import CLI
from pilot.db import db
from pilot.models import AnalysisRun, Assignment, Customer, Store, Transaction
from pilot.rollout import get_pilot
from pilot.weekly_effects import weekly_value
from tests.conftest import PG_URL
from tests.factories import NOW, plant, store_pilot  # noqa: F401  (the tests' shared store pilot)

REL = 1e-9


def require_spark() -> None:
    """Skip, saying why, where the optional `spark` extra or Java is missing."""
    try:
        import pyarrow  # noqa: F401
        import pyspark  # noqa: F401
        import sqlglot  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"the spark extra is not installed ({exc.name}): pip install -e \".[spark]\"")
    if not (shutil.which("java") or os.environ.get("JAVA_HOME")):
        pytest.skip("Spark needs Java 17 (no java on the PATH and no JAVA_HOME)")


def free_port() -> int:
    """A port nobody listens on now (for a server the test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quiet(spark) -> None:
    spark.sparkContext.setLogLevel("ERROR")


def builder(master: str):
    """A small session: few shuffle partitions, no UI (tests and the bench)."""
    from pyspark.sql import SparkSession
    return (SparkSession.builder.master(master).appName("pilot-tests").config("spark.ui.enabled", "false")
            .config("spark.sql.shuffle.partitions", "4").config("spark.driver.host", "127.0.0.1")
            .config("spark.sql.session.timeZone", "UTC"))


def skip_sqlite_when_postgres(backend) -> None:
    """Spark is compared with PostgreSQL when it is configured (else with SQLite): one run each."""
    if PG_URL and backend[0] == "sqlite":
        pytest.skip("compared with PostgreSQL (PILOT_TEST_DATABASE_URL is set)")


def write_lake(app, path: Path, rename: dict[str, str] | None = None, amount_as_text: bool = False) -> int:
    """Pilot's transactions as a Parquet lake in the feed's fields (customer: external id, store: code)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    t = Transaction
    with app.app_context():
        rows = db.session.execute(
            select(t.event_id, Customer.external_id, Store.code, t.occurred_at, t.type, t.amount, t.items,
                   t.discount_cost)
            .join(Customer, Customer.id == t.customer_id).join(Store, Store.id == t.store_id)).all()
    names = ["event_id", "customer", "store", "occurred_at", "type", "amount", "items", "discount_cost"]
    cols = dict(zip(names, zip(*rows))) if rows else {n: () for n in names}
    amounts = [float(x) for x in cols["amount"]]
    table = pa.table({
        "event_id": pa.array(cols["event_id"], pa.string()), "customer": pa.array(cols["customer"], pa.string()),
        "store": pa.array(cols["store"], pa.string()),
        "occurred_at": pa.array(cols["occurred_at"], pa.timestamp("us", tz="UTC")),
        "type": pa.array(cols["type"], pa.string()),
        "amount": pa.array([str(x) for x in amounts], pa.string()) if amount_as_text else pa.array(amounts),
        "items": pa.array(cols["items"], pa.int64()),
        "discount_cost": pa.array([None if x is None else float(x) for x in cols["discount_cost"]], pa.float64())})
    if rename:
        table = table.rename_columns([rename.get(n, n) for n in table.column_names])
    pq.write_table(table, path)
    return len(rows)


def customer_pilot(app) -> str:
    """A customer pilot with a tiered arm (the cost's window over earlier sales), refunds, saved groups,
    a pre-period and exposures spread over two weeks and the clock (units differ in their full weeks)."""
    key = plant(app, "tiered_groups", customers=500, stores=8, key="lake")
    with app.app_context():
        pilot = get_pilot(db.session, key)
        for row in db.session.scalars(select(Assignment).where(Assignment.pilot_id == pilot.id)):
            row.assigned_at += timedelta(days=row.customer_id % 15, hours=row.customer_id * 5 % 24)
            if row.customer_id % 7 == 0:
                db.session.add(Transaction(source="test", event_id=f"refund-{row.customer_id}",
                                           customer_id=row.customer_id, store_id=row.store_id or 1,
                                           occurred_at=row.assigned_at + timedelta(days=3), type="refund",
                                           amount=-12.5, items=-1, batch_id=0, batch_row=row.customer_id))
        db.session.commit()
    return key




def analyse(app, key: str, engine: str, **config: Any) -> AnalysisRun:
    """One run through the leased path (committed running, then done or failed), as the service runs it."""
    app.config.update(config)
    with app.app_context():
        run = analysis_runs.create_run(db.session, CLI.actor, get_pilot(db.session, key), cutoff=NOW, engine=engine)
        db.session.commit()
        run = analysis_runs.execute_leased(db.session, run.id)
        db.session.refresh(run)
        db.session.expunge(run)
        return run


def cubes(app, key: str):
    """The stage's cube from the database and from Spark (the same statements, runner apart)."""
    from pilot import spark_engine
    with app.app_context():
        pilot = get_pilot(db.session, key)
        stage = pilot.stage(1)

        def compute(runner=None):
            if pilot.unit == "store":
                return store_cube(db.session, pilot, stage, NOW, runner)
            return customer_cube(db.session, pilot, stage, NOW, analysis_runs.PRE_DAYS,
                                 weekly_value(pilot.primary_metric), [], runner or DatabaseRunner(db.session))

        database = compute()
        with spark_engine.runner(db.session, app.config, pilot, stage, NOW) as runner:
            return database, compute(runner)


CUBE_FIELDS = ("by_group", "store_cells", "by_week", "stores", "by_period", "by_cell", "week_cells",
               "full_week_cells")


def assert_cubes_equal(a: Cube, b: Cube) -> int:
    """Every cell of every slice equal to 1e-9 relative (1e-9 absolute at zero); returns the cells compared."""
    cells = 0
    for name in CUBE_FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert set(x) == set(y), (name, set(x) ^ set(y))
        for key in x:
            if isinstance(x[key], dict):
                assert set(x[key]) == set(y[key]), (name, key, set(x[key]) ^ set(y[key]))
                for stat, value in x[key].items():
                    assert math.isclose(value, y[key][stat], rel_tol=REL, abs_tol=REL), (name, key, stat)
                    cells += 1
            else:
                assert x[key] == y[key], (name, key)
                cells += 1
    assert (a.cutoff, a.pre_start) == (b.cutoff, b.pre_start)
    return cells


def catalogue_only(results: Any) -> Any:
    """A run's results without the defined metrics' rows (the Spark engine measures none: it lists them
    in `defined_metrics_skipped`), so the two engines' runs compare cell by cell on what both measure."""
    from pilot.metrics import CATALOGUE
    if isinstance(results, dict):
        return {k: catalogue_only(v) for k, v in results.items() if k != "defined_metrics_skipped"}
    if isinstance(results, list):
        return [catalogue_only(r) for r in results
                if not (isinstance(r, dict) and "metric" in r and r["metric"] not in CATALOGUE)]
    return results


def assert_close(a: Any, b: Any, path: str = "") -> None:
    """Two runs' JSON equal: numbers to 1e-9 relative, everything else exactly."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (path, set(a) ^ set(b) if isinstance(b, dict) else b)
        for k in a:
            assert_close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and not isinstance(a, bool):
        assert isinstance(b, (int, float)) and (math.isclose(a, b, rel_tol=REL, abs_tol=REL)
                                                or (math.isnan(a) and math.isnan(b))), (path, a, b)
    else:
        assert a == b, (path, a, b)
