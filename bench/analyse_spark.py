"""The analysis on Apache Spark (local[2]) against PostgreSQL, on the same pilot and the same data.

Loads a retailer into PostgreSQL as bench/analyse.py does (customers, a started 3-arm pilot with
everyone assigned, 7 catalogue metrics, CUPED, groups, 8 weeks, the transactions), writes the same
transactions to a Parquet lake in the feed's fields (customer: external id, store: code; via COPY and
pyarrow), then measures: one full analysis on Spark (`spark_seconds`: facts sent, lake read, the
aggregation, the statistics; the session is started before, as a service keeps it), one plain Spark
scan of the Parquet (`spark_scan_seconds`), the same analysis on PostgreSQL (`postgres_seconds`), and
whether the two engines' cubes are equal to 1e-9 in every cell (`cubes_equal`). Both engines read
the same rows: `rows` = `rows_compared` (the lake is the database's transactions; the default 50M rows
for 5M customers needs far more than a shared 2-core machine, so pass a size that fits).

Ends with one JSON line: rows, customers, spark_seconds, spark_scan_seconds, ratio_vs_scan,
postgres_seconds, rows_compared, cubes_equal, cells_compared, load_seconds, lake_seconds,
spark_session_seconds, decision_spark, decision_postgres, and the first (cold) run of each engine
(spark_cold_seconds, postgres_cold_seconds; the timed run is the second, as a service finds it).
Targets (2 cores): ratio_vs_scan <= 4, cubes_equal true, spark_seconds <= postgres_seconds.

Usage: python bench/analyse_spark.py [CUSTOMERS TRANSACTIONS]   (PILOT_BENCH_POSTGRES_URL as in bench/assign.py)
"""
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from analyse import load  # noqa: E402  (bench/analyse.py: the same retailer, set-based)

from pilot import analysis_runs, create_app, spark_engine  # noqa: E402
from pilot.aggregation import DatabaseRunner, customer_cube  # noqa: E402
from pilot.auth import CLI  # noqa: E402
from pilot.db import db  # noqa: E402
from pilot.rollout import get_pilot  # noqa: E402
from pilot.weekly_effects import weekly_value  # noqa: E402

PG_ADMIN = os.environ.get("PILOT_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_URL = PG_ADMIN.rsplit("/", 1)[0] + "/pilot_spark_bench"
LAKE_SQL = ("SELECT t.event_id, c.external_id AS customer, s.code AS store, t.occurred_at, t.type, "
            "CAST(t.amount AS float8) AS amount, t.items, CAST(t.discount_cost AS float8) AS discount_cost "
            "FROM transactions t JOIN customers c ON c.id = t.customer_id JOIN stores s ON s.id = t.store_id")


def write_lake(url: str, folder: Path) -> Path:
    """The database's transactions as Parquet (COPY to CSV, read and written by pyarrow in C++)."""
    import psycopg
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
    csv_path, lake = folder / "lake.csv", folder / "lake.parquet"
    with psycopg.connect(url) as conn, conn.cursor() as cur, open(csv_path, "wb") as out:
        cur.execute("SET TIME ZONE 'UTC'")
        with cur.copy(f"COPY ({LAKE_SQL}) TO STDOUT WITH (FORMAT csv, HEADER true)") as copy:
            for chunk in copy:
                out.write(chunk)
    types = {"event_id": pa.string(), "customer": pa.string(), "store": pa.string(),
             "occurred_at": pa.timestamp("us", tz="UTC"), "type": pa.string(), "amount": pa.float64(),
             "items": pa.int64(), "discount_cost": pa.float64()}
    reader = pacsv.open_csv(csv_path, convert_options=pacsv.ConvertOptions(column_types=types),
                            read_options=pacsv.ReadOptions(block_size=64 << 20))
    writer = None
    for batch in reader:
        writer = writer or pq.ParquetWriter(lake, batch.schema)
        writer.write_table(pa.Table.from_batches([batch]))
    if writer:
        writer.close()
    csv_path.unlink()
    return lake


def cells_equal(a, b) -> tuple[bool, int]:
    import math
    cells, equal = 0, True
    for name in ("by_group", "store_cells", "by_week", "by_cell", "week_cells", "full_week_cells"):
        x, y = getattr(a, name), getattr(b, name)
        equal &= set(x) == set(y)
        for key in set(x) & set(y):
            if isinstance(x[key], dict):
                equal &= set(x[key]) == set(y[key])
                for stat in set(x[key]) & set(y[key]):
                    equal &= math.isclose(x[key][stat], y[key][stat], rel_tol=1e-9, abs_tol=1e-9)
                    cells += 1
            else:
                equal &= x[key] == y[key]
                cells += 1
    return bool(equal), cells


def main() -> None:
    customers = int(sys.argv[1]) if len(sys.argv) > 2 else 5_000_000
    transactions = int(sys.argv[2]) if len(sys.argv) > 2 else 50_000_000
    admin = create_engine(PG_ADMIN.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    folder = Path(tempfile.mkdtemp(prefix="pilot-spark-bench-"))
    figures: dict = {"rows": transactions, "customers": customers}
    try:
        with admin.connect() as conn:
            conn.execute(text("DROP DATABASE IF EXISTS pilot_spark_bench WITH (FORCE)"))
            conn.execute(text("CREATE DATABASE pilot_spark_bench"))
        started = time.perf_counter()
        load(PG_URL, customers, transactions)
        figures["load_seconds"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        lake = write_lake(PG_URL, folder)
        figures["lake_seconds"] = round(time.perf_counter() - started, 1)
        figures.update(measure(lake))
        figures["rows_compared"] = transactions
    finally:
        with admin.connect() as conn:
            conn.execute(text("DROP DATABASE IF EXISTS pilot_spark_bench WITH (FORCE)"))
        for f in sorted(folder.rglob("*"), reverse=True):
            f.unlink() if f.is_file() else f.rmdir()
        folder.rmdir()
    print(json.dumps(figures))


def measure(lake: Path) -> dict:
    from pyspark.sql import SparkSession
    out: dict = {}
    started = time.perf_counter()
    spark = (SparkSession.builder.master("local[2]").appName("pilot-bench").config("spark.ui.enabled", "false")
             .config("spark.driver.memory", "3g").config("spark.sql.shuffle.partitions", "8").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    out["spark_session_seconds"] = round(time.perf_counter() - started, 1)
    app = create_app({"DATABASE_URL": PG_URL, "AUTO_MIGRATE": False, "SPARK_MASTER": "local[2]",
                      "SPARK_TRANSACTIONS": str(lake)})
    with app.app_context():
        pilot = get_pilot(db.session, "bench")
        for engine, key in (("database", "postgres"), ("spark", "spark")):
            for look in ("warm-up", "timed"):  # the first warms the caches (and the JVM's code), as a service has them
                started = time.perf_counter()
                run = analysis_runs.create_run(db.session, CLI.actor, pilot, engine=engine)
                db.session.commit()
                run = analysis_runs.execute_leased(db.session, run.id)
                out[f"{key}_seconds"] = round(time.perf_counter() - started, 2)
                out[f"decision_{key}"] = run.decision if run.status == "done" else run.error
                if look == "warm-up":
                    out[f"{key}_cold_seconds"] = out.pop(f"{key}_seconds")
        started = time.perf_counter()
        spark.read.parquet(str(lake)).createOrReplaceTempView("lake")
        spark.sql("SELECT count(*), sum(amount), sum(amount * amount), sum(items) FROM lake").collect()
        out["spark_scan_seconds"] = round(time.perf_counter() - started, 2)
        out["ratio_vs_scan"] = round(out["spark_seconds"] / out["spark_scan_seconds"], 2)
        stage = pilot.stage(1)
        cutoff = db.session.get(type(run), run.id).cutoff
        args = (db.session, pilot, stage, cutoff, analysis_runs.PRE_DAYS, weekly_value(pilot.primary_metric), [])
        database = customer_cube(*args, DatabaseRunner(db.session))
        with spark_engine.runner(db.session, app.config, pilot, stage, cutoff) as runner:
            on_spark = customer_cube(*args, runner)
        db.session.rollback()
        out["cubes_equal"], out["cells_compared"] = cells_equal(database, on_spark)
    spark.stop()
    return out


if __name__ == "__main__":
    main()
