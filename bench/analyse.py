"""Analysis speed: 1,000,000 customers and 10,000,000 transactions in PostgreSQL.

Loads the data set-based (generate_series), assigns everyone with the bulk path, then in a fresh
process runs a full analysis (7 catalogue metrics incl. the 5 asked for, CUPED, 4 customer groups
plus 'other', 8 weeks, 3 arms) and measures its wall time and peak memory; times one plain full scan
of the same transactions, and the usual alternative (pandas read_sql of the raw rows + statsmodels
OLS per arm and metric); finally 1,000,000 transactions on SQLite. Ends with one JSON line:
seconds, scan_seconds, ratio_vs_scan, pandas_statsmodels_seconds, speedup_vs_pandas, peak_rss_mb,
sqlite_1m_seconds; also unit_group_seconds, one metric summed per customer and then over customers
(the least any per-customer variance needs; no JIT, 256 MB of work_mem), the same joined to the
assignments (post-exposure rows of assigned customers only: unit_join_seconds), and their ratios to the scan. Targets (2 cores): <= 20 s, <= 3x the scan, >= 5x faster than pandas +
statsmodels, <= 500 MB; 1M transactions on SQLite <= 10 s.

Usage: python bench/analyse.py [CUSTOMERS TRANSACTIONS]   (PILOT_BENCH_POSTGRES_URL as in bench/assign.py)
"""
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pilot import create_app  # noqa: E402
from pilot.assignment import Holdout, assign_bulk  # noqa: E402
from pilot.auth import CLI  # noqa: E402
from pilot.db import db, utcnow  # noqa: E402
from pilot.migrate import upgrade  # noqa: E402
from pilot.programmes import create_programme  # noqa: E402
from pilot.rollout import create_pilot, get_pilot, transition  # noqa: E402
from pilot.simulate import BONUS, CONTROL, DISCOUNT10, backdate  # noqa: E402
from pilot.synthetic import REGIONS, add_groups, add_regions, add_store  # noqa: E402

PG_ADMIN = os.environ.get("PILOT_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_URL = PG_ADMIN.rsplit("/", 1)[0] + "/pilot_bench"
GUARDRAILS = [{"metric": m, "max_harm": 0.05} for m in ("spend_per_visit", "visits_per_customer", "conversion",
                                                         "discount_cost_per_customer")]


def load(url: str, customers: int, transactions: int) -> None:
    """Stores, groups, customers, a started 3-arm pilot with everyone assigned, and the transactions."""
    import random

    app = create_app({"DATABASE_URL": url, "AUTO_MIGRATE": False})
    pg = url.startswith("postgresql")
    with app.app_context():
        upgrade(db.engine)
        s = db.session
        rng = random.Random(3)
        add_regions(s)
        for i in range(60):
            add_store(s, rng, i)
        add_groups(s)
        series = (f"SELECT g AS n FROM generate_series(1, {customers}) AS g" if pg else
                  f"WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < {customers}) SELECT n FROM r")
        ages = "ARRAY['18-24','25-34','35-44','45-54','55-64','65+']"
        age = f"({ages})[1 + n % 6]" if pg else "CASE n % 6 WHEN 0 THEN '18-24' WHEN 1 THEN '25-34' WHEN 2 THEN " \
                                                "'35-44' WHEN 3 THEN '45-54' WHEN 4 THEN '55-64' ELSE '65+' END"
        s.execute(text(
            "INSERT INTO customers (external_id, home_store_id, age_band, household_size, children, attributes, "
            f"created_at, updated_at) SELECT 'B' || n, 1 + n % 60, {age}, 1 + (n / 7) % 4, (n / 5) % 3, '{{}}', "
            f"CURRENT_TIMESTAMP, CURRENT_TIMESTAMP FROM ({series}) AS t"))
        programme = create_programme(s, CLI.actor, {"key": "bench", "name": "Bench", "variants": [CONTROL, BONUS,
                                                                                                   DISCOUNT10]})
        pilot = create_pilot(s, CLI.actor, programme, {
            "key": "bench", "name": "Bench", "unit": "customer", "layer": "bench", "salt": "bench",
            "primary_metric": "spend_per_customer", "guardrails": GUARDRAILS,
            "stages": [{"region_codes": [c for c, _ in REGIONS],
                        "allocation": {"control": 0.34, "bonus": 0.33, "discount10": 0.33}}]})
        transition(s, CLI.actor, pilot, "start")
        assign_bulk(s, pilot, Holdout())
        start = utcnow() - timedelta(weeks=8)
        backdate(s, pilot, start)
        s.commit()
        first = start - timedelta(weeks=8)
        span = 16 * 7 * 86400 - 3600
        if pg:
            s.execute(text("SELECT setseed(0.42)"))
            tx_series = f"SELECT g AS n, random() AS r1, random() AS r2, random() AS r3 FROM generate_series(1, {transactions}) AS g"
            when = f"CAST(:first AS timestamptz) + (r2 * {span}) * interval '1 second'"
            amount = "round(CAST(exp(3.2 + 0.8 * sqrt(-2 * ln(r1 + 1e-12)) * cos(6.2832 * r3)) AS numeric), 2)"
        else:
            tx_series = (f"WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < {transactions}) "
                         "SELECT n, (abs(random()) % 1000000) / 1000000.0 AS r1, (abs(random()) % 1000000) / 1000000.0 "
                         "AS r2, (abs(random()) % 1000000) / 1000000.0 AS r3 FROM r")
            when = f"strftime('%Y-%m-%d %H:%M:%f000', julianday(:first) + r2 * {span} / 86400.0)"
            amount = "round(5 + 60 * r1 * r1, 2)"
        s.execute(text(
            "INSERT INTO ingestion_batches (source, actor, method, on_error, status, rows, accepted, duplicates, "
            "conflicts, rejected, customers_created, errors, started_at) VALUES ('bench', 'bench', 'cli', "
            "'reject_batch', 'accepted', 0, 0, 0, 0, 0, 0, '[]', CURRENT_TIMESTAMP)"))
        s.execute(text(
            "INSERT INTO transactions (source, event_id, customer_id, store_id, occurred_at, type, amount, items, "
            "discount_cost, points_issued, points_redeemed, channel, batch_id, batch_row, received_at) "
            f"SELECT 'bench', 'e' || n, 1 + (CAST(n AS BIGINT) * 7919) % {customers}, "
            f"1 + ((CAST(n AS BIGINT) * 7919) % {customers}) % 60, {when}, "
            f"'sale', {amount}, 1 + n % 9, NULL, 0, 0, 'store', 1, n, CURRENT_TIMESTAMP FROM ({tx_series}) AS t"),
            {"first": first if pg else first.strftime("%Y-%m-%d %H:%M:%S")})
        s.commit()
        if pg:
            s.execute(text("ANALYZE"))
            s.commit()
        db.engine.dispose()


def analyse_only(url: str) -> None:
    """Child process: one full analysis; prints seconds and this process's peak RSS."""
    from pilot import analysis_runs
    app = create_app({"DATABASE_URL": url, "AUTO_MIGRATE": False})
    with app.app_context():
        started = time.perf_counter()
        run = analysis_runs.create_run(db.session, CLI.actor, get_pilot(db.session, "bench"))
        analysis_runs.execute(db.session, run)
        db.session.commit()
        seconds = time.perf_counter() - started
        shape = {"arms": len(run.results["arms"]), "metrics": len({m["metric"] for m in run.results["metrics"]}),
                 "groups": len({g["group"] for g in run.results["groups"]}),
                 "weeks": len({w["week"] for w in run.results["weeks"]}), "decision": run.decision,
                 "units": sum(a["n"] for a in run.results["arms"])}
    print(json.dumps({"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      **shape}))


def pandas_only(url: str) -> None:
    """Child process: the usual alternative, raw rows into pandas and OLS per arm and metric."""
    import pandas as pd
    import statsmodels.formula.api as smf
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    started = time.perf_counter()
    with engine.connect() as conn:
        start = conn.execute(text("SELECT started_at FROM pilots WHERE key = 'bench'")).scalar()
        rows = pd.read_sql(text("SELECT t.customer_id, t.amount, t.items, t.occurred_at, a.variant FROM transactions t "
                                "JOIN assignments a ON a.customer_id = t.customer_id"), conn)
        units = pd.read_sql(text("SELECT customer_id, variant FROM assignments"), conn)
    rows["post"] = rows.occurred_at >= start
    post, pre = rows[rows.post], rows[~rows.post]
    per = units.set_index("customer_id")
    per["spend"] = post.groupby("customer_id").amount.sum()
    per["visits"] = post.groupby("customer_id").size()
    per["items"] = post.groupby("customer_id")["items"].sum()
    per["pre_spend"] = pre.groupby("customer_id").amount.sum()
    per = per.fillna(0.0)
    per["converted"] = (per.visits > 0).astype(float)
    per["basket"] = per.spend / per.visits.where(per.visits > 0)
    for arm in ("bonus", "discount10"):
        part = per[per.variant.isin(["control", arm])]
        part = part.assign(treated=(part.variant == arm).astype(float))
        for formula in ("spend ~ treated + pre_spend", "visits ~ treated", "converted ~ treated",
                        "items ~ treated", "basket ~ treated"):
            smf.ols(formula, data=part).fit(cov_type="HC1")
    print(json.dumps({"seconds": time.perf_counter() - started,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def child(mode: str, url: str) -> dict:
    out = subprocess.run([sys.executable, __file__, mode, url], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    customers = int(sys.argv[1]) if len(sys.argv) > 2 else 1_000_000
    transactions = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000_000
    admin = create_engine(PG_ADMIN.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    figures: dict = {"customers": customers, "transactions": transactions}
    try:
        with admin.connect() as conn:
            conn.execute(text("DROP DATABASE IF EXISTS pilot_bench WITH (FORCE)"))
            conn.execute(text("CREATE DATABASE pilot_bench"))
        started = time.perf_counter()
        load(PG_URL, customers, transactions)
        figures["load_seconds"] = round(time.perf_counter() - started, 1)
        child("--analyse-only", PG_URL)  # warm the cache as a daily run would find it
        run = child("--analyse-only", PG_URL)
        figures.update(seconds=round(run["seconds"], 2), peak_rss_mb=round(run["peak_rss_mb"], 1),
                       shape={k: run[k] for k in ("arms", "metrics", "groups", "weeks", "units", "decision")})
        engine = create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://"))
        with engine.connect() as conn:
            started = time.perf_counter()
            conn.execute(text("SELECT count(*), sum(amount), sum(amount * amount), sum(items) FROM transactions")).all()
            figures["scan_seconds"] = round(time.perf_counter() - started, 2)
            conn.commit()
            # the least any per-customer variance needs: one metric summed per customer, then over
            # customers; given its best settings (no JIT, hashed groups in memory)
            conn.execute(text("SET LOCAL jit = off"))
            conn.execute(text("SET LOCAL work_mem = '256MB'"))
            started = time.perf_counter()
            conn.execute(text("SELECT count(*), sum(s), sum(s * s) FROM (SELECT customer_id, sum(amount) AS s "
                              "FROM transactions GROUP BY customer_id) AS u")).all()
            figures["unit_group_seconds"] = round(time.perf_counter() - started, 2)
            # the same with the join every analysis needs: only assigned customers' post-exposure rows
            started = time.perf_counter()
            conn.execute(text("SELECT count(*), sum(s), sum(s * s) FROM (SELECT t.customer_id, sum(t.amount) AS s "
                              "FROM transactions t JOIN assignments a ON a.customer_id = t.customer_id "
                              "AND t.occurred_at >= a.assigned_at GROUP BY t.customer_id) AS u")).all()
            figures["unit_join_seconds"] = round(time.perf_counter() - started, 2)
            conn.rollback()
        engine.dispose()
        figures["ratio_vs_scan"] = round(figures["seconds"] / figures["scan_seconds"], 2)
        figures["unit_group_ratio_vs_scan"] = round(figures["unit_group_seconds"] / figures["scan_seconds"], 2)
        figures["unit_join_ratio_vs_scan"] = round(figures["unit_join_seconds"] / figures["scan_seconds"], 2)
        alt = child("--pandas-only", PG_URL)
        figures["pandas_statsmodels_seconds"] = round(alt["seconds"], 1)
        figures["pandas_peak_rss_mb"] = round(alt["peak_rss_mb"], 1)
        figures["speedup_vs_pandas"] = round(alt["seconds"] / figures["seconds"], 1)
    finally:
        with admin.connect() as conn:
            conn.execute(text("DROP DATABASE IF EXISTS pilot_bench WITH (FORCE)"))
    tmp = Path(tempfile.mkdtemp())
    sqlite_url = f"sqlite:///{tmp / 'bench.db'}"
    load(sqlite_url, 100_000, 1_000_000)
    figures["sqlite_1m_seconds"] = round(child("--analyse-only", sqlite_url)["seconds"], 2)
    (tmp / "bench.db").unlink()
    print(json.dumps(figures))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--analyse-only":
        analyse_only(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "--pandas-only":
        pandas_only(sys.argv[2])
    else:
        main()
