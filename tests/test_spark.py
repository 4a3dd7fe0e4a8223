"""The analysis on Apache Spark (local[2]): the same cube as the database from the same data, the same
run and recommendation, the engine recorded, and the engine's failures ending the run `failed` with
Pilot's state untouched. (tests/test_spark_cluster.py: the same on a standalone cluster.)"""
from __future__ import annotations

import socket

import pytest
from sqlalchemy import func, select

from pilot import analysis_runs
from pilot.auth import CLI, issue_token
from pilot.db import db
from pilot.errors import Invalid
from pilot.models import Assignment, AuditEvent, Enrolment, Pilot
from pilot.rollout import get_pilot
from tests.factories import NOW
from tests.spark_helpers import (
    analyse,
    assert_close,
    assert_cubes_equal,
    builder,
    catalogue_only,
    cubes,
    customer_pilot,
    quiet,
    require_spark,
    skip_sqlite_when_postgres,
    store_pilot,
    write_lake,
)

MASTER = "local[2]"


@pytest.fixture(scope="module")
def spark():
    """One local session for the module (the engine's runs take sessions of their own from it)."""
    require_spark()
    session = builder(MASTER).getOrCreate()
    quiet(session)
    yield session
    session.stop()


@pytest.fixture
def lake_app(app, backend, spark, tmp_path):
    """The app with the Spark engine configured on a lake at tmp_path/lake.parquet (written by the test)."""
    skip_sqlite_when_postgres(backend)
    app.config.update(SPARK_MASTER=MASTER, SPARK_TRANSACTIONS=str(tmp_path / "lake.parquet"), SPARK_COLUMNS=None)
    return app


def test_customer_cube_and_run_equal_the_database(lake_app, tmp_path):
    key = customer_pilot(lake_app)
    assert write_lake(lake_app, tmp_path / "lake.parquet") > 3000
    database, spark = cubes(lake_app, key)
    assert len(database.by_group) >= 8 and len(database.by_week) >= 8 and len(set(database.full_weeks)) > 2
    assert any(s["pre_spend"] for s in database.by_group.values())
    assert assert_cubes_equal(database, spark) > 500
    on_db, on_spark = analyse(lake_app, key, "database"), analyse(lake_app, key, "spark")
    assert (on_db.status, on_db.engine, on_spark.status, on_spark.engine) == ("done", "database", "done", "spark")
    assert on_spark.decision == on_db.decision
    assert_close(on_db.recommendation, on_spark.recommendation)
    assert_close(catalogue_only(on_db.results), catalogue_only(on_spark.results))
    assert on_spark.counts == on_db.counts


def test_store_cube_and_run_equal_the_database(lake_app, tmp_path):
    key = store_pilot(lake_app)
    write_lake(lake_app, tmp_path / "lake.parquet")
    database, spark = cubes(lake_app, key)
    assert len(database.stores) == 12 and all(v["pre_spend"] > 0 for v in database.stores.values())
    assert_cubes_equal(database, spark)
    on_db, on_spark = analyse(lake_app, key, "database"), analyse(lake_app, key, "spark")
    assert (on_db.status, on_spark.status, on_spark.engine) == ("done", "done", "spark")
    assert on_spark.decision == on_db.decision
    assert_close(on_db.recommendation, on_spark.recommendation)
    assert_close(catalogue_only(on_db.results), catalogue_only(on_spark.results))


def _state(app, key: str) -> tuple:
    """What of Pilot's state a failed run must leave as it was."""
    with app.app_context():
        pilot = get_pilot(db.session, key)
        count = lambda model, col: db.session.scalar(select(func.count()).select_from(model)  # noqa: E731
                                                     .where(col == pilot.id))
        return (pilot.state, pilot.current_stage, pilot.stage(1).allocation, count(Assignment, Assignment.pilot_id),
                count(Enrolment, Enrolment.pilot_id), db.session.scalar(select(func.count()).select_from(AuditEvent)),
                db.session.scalar(select(func.count()).select_from(Pilot)))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_engine_failures_end_the_run_failed_and_change_nothing(lake_app, tmp_path):
    key = _small(lake_app)
    lake, text_amounts = tmp_path / "lake.parquet", tmp_path / "text_amounts.parquet"
    write_lake(lake_app, lake)
    write_lake(lake_app, text_amounts, amount_as_text=True)
    cases = {
        "cluster down": ({"SPARK_MASTER": f"spark://127.0.0.1:{_closed_port()}"},
                         "Unavailable: Spark cannot be reached at spark://127.0.0.1:"),
        "table missing": ({"SPARK_TRANSACTIONS": "retail.no_such_table"},
                          "Invalid: PILOT_SPARK_TRANSACTIONS 'retail.no_such_table': no such table or path"),
        "path missing": ({"SPARK_TRANSACTIONS": str(tmp_path / "nowhere.parquet")}, "no such table or path"),
        "column missing": ({"SPARK_COLUMNS": "customer_id=loyalty_id"},
                           "customer_id (column 'loyalty_id' is missing)"),
        "wrong type": ({"SPARK_TRANSACTIONS": str(text_amounts)},
                       "amount (column 'amount' is string; a number is needed)"),
        "bad mapping": ({"SPARK_COLUMNS": "shopper=loyalty_id"}, "PILOT_SPARK_COLUMNS: 'shopper=loyalty_id'"),
    }
    before = _state(lake_app, key)
    for case, (config, expected) in cases.items():
        settings = {"SPARK_MASTER": MASTER, "SPARK_TRANSACTIONS": str(lake), "SPARK_COLUMNS": None, **config}
        run = analyse(lake_app, key, "spark", **settings)
        assert (run.status, run.engine) == ("failed", "spark"), case
        assert expected in run.error, (case, run.error)
        assert run.results == {} and run.decision is None, case
        assert _state(lake_app, key) == before, case
    # and with the lake as configured, the same pilot's run is done
    assert analyse(lake_app, key, "spark", SPARK_TRANSACTIONS=str(lake), SPARK_COLUMNS=None).status == "done"


def _small(app) -> str:
    from tests.factories import plant
    return plant(app, "too_few", key="small")


def test_the_default_engine_is_the_database_and_the_run_says_so(app, client):
    from tests.factories import plant
    key = plant(app, "too_few", key="plain")
    run = analyse(app, key, None)
    assert (run.status, run.engine) == ("done", "database")
    with app.app_context():
        secret = issue_token(db.session, "reader", "analyst", None)[1]
        db.session.commit()
    body = client.get(f"/api/v1/analyses/{run.id}", headers={"Authorization": f"Bearer {secret}"}).get_json()
    assert body["engine"] == "database"
    with app.app_context():
        with pytest.raises(Invalid, match="Unknown analysis engine 'hive'"):
            analysis_runs.create_run(db.session, CLI.actor, get_pilot(db.session, key), cutoff=NOW, engine="hive")


def test_the_aggregation_is_one_definition_transpiled():
    """The Spark SQL is pilot.aggregation's statement for PostgreSQL, transpiled: its epoch seconds keep
    the microseconds, times are typed UTC literals, the conditional sums keep FILTER."""
    pytest.importorskip("sqlglot", reason="the spark extra is not installed")
    from datetime import UTC, datetime

    from sqlalchemy import literal

    from pilot import spark_engine
    from pilot.models import Transaction
    from pilot.sqltime import epoch_seconds
    t = Transaction
    stmt = select(func.sum(t.amount).filter(t.occurred_at >= datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)).label("x*y"),
               epoch_seconds(t.occurred_at, "postgresql").label("e"), literal(0.125).label("r"))
    sql = spark_engine.spark_sql(stmt)
    assert "(CAST(UNIX_MICROS(transactions.occurred_at) AS DOUBLE) / 1e6) AS e" in sql
    assert "FILTER(WHERE transactions.occurred_at >= CAST('2026-01-02 03:04:05.000006+00:00' AS TIMESTAMP))" in sql
    assert "AS `x*y`" in sql and "EPOCH" not in sql.upper().replace("UNIX_MICROS", "")


def test_cli_analyse_spark_and_export_assignments(lake_app, tmp_path):
    import json

    import pyarrow.parquet as pq

    from pilot.cli import cli
    from pilot.models import Customer
    key = _small(lake_app)
    write_lake(lake_app, tmp_path / "lake.parquet")
    runner = lake_app.test_cli_runner()
    out = runner.invoke(cli, ["analyse-spark", "--pilot", key, "--cutoff", NOW.strftime("%Y-%m-%d %H:%M:%S")])
    assert out.exit_code == 0, out.output
    body = json.loads(out.output)
    assert (body["status"], body["engine"], body["error"]) == ("done", "spark", None) and body["decision"]
    lake_app.config["SPARK_TRANSACTIONS"] = "retail.gone"
    failed = runner.invoke(cli, ["analyse-spark", "--pilot", key])
    assert failed.exit_code == 1 and "no such table or path" in json.loads(failed.output)["error"]
    path = tmp_path / "assignments.parquet"
    out = runner.invoke(cli, ["export-assignments", "--pilot", key, "--format", "parquet", str(path)])
    assert out.exit_code == 0, out.output
    table = pq.read_table(path)
    assert table.column_names == ["pilot", "customer", "variant", "stage", "store", "assigned_at"]
    with lake_app.app_context():
        pilot = get_pilot(db.session, key)
        expected = set(db.session.execute(
            select(Customer.external_id, Assignment.variant, Assignment.assigned_at)
            .join(Customer, Customer.id == Assignment.customer_id).where(Assignment.pilot_id == pilot.id)).all())
    rows = table.to_pylist()
    assert len(rows) == len(expected) > 100 and f"{len(rows)} assignments written" in out.output
    assert {(r["customer"], r["variant"], r["assigned_at"]) for r in rows} == expected
    assert {r["pilot"] for r in rows} == {key} and all(r["store"] for r in rows)
    csv_path = tmp_path / "assignments.csv"
    assert runner.invoke(cli, ["export-assignments", "--pilot", key, "--format", "csv", str(csv_path)]).exit_code == 0
    assert csv_path.read_text().splitlines()[0] == "pilot,customer,variant,stage,store,assigned_at"
    assert runner.invoke(cli, ["export-assignments", "--pilot", "nope", str(path)]).exit_code == 2
