"""Planning speed: a customer pilot's plan over 1,000,000 customers / 10,000,000 historical transactions
on PostgreSQL, and store selection over 200 candidate stores.

Loads the data set-based (generate_series: 200 stores in five regions, customers spread over them,
24 weeks of transactions before now, log-normal baskets), then times one plan of a customer pilot over
every store (eligible customers, baseline, CUPED reduction, power curve, and 200 simulated pilots on
the history: `plan_seconds`) and one store selection over the 200 stores (a design of 20 stores;
greedy starts, each design scored by simulated pilots and balance: `store_selection_seconds`).
Prints one JSON line: plan_seconds, store_selection_seconds, simulations (of the plan and of the
selection), customers, transactions, stores, units (eligible customers planned), designs.
Targets (2 cores): a plan in <= 10 s, store selection in <= 60 s.

Usage: python bench/plan.py [CUSTOMERS TRANSACTIONS STORES]   (PILOT_BENCH_POSTGRES_URL: the admin URL,
default postgresql://postgres@127.0.0.1:5432/postgres; the database pilot_plan_bench is made and dropped)
"""
import json
import os
import random
import sys
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pilot import create_app  # noqa: E402
from pilot.auth import CLI  # noqa: E402
from pilot.db import db, utcnow  # noqa: E402
from pilot.migrate import upgrade  # noqa: E402
from pilot.planner import plan_config  # noqa: E402
from pilot.programmes import create_programme  # noqa: E402
from pilot.simulate import BONUS, CONTROL  # noqa: E402
from pilot.store_selection import SELECTION_SIMULATIONS, propose_config  # noqa: E402
from pilot.synthetic import REGIONS, add_groups, add_regions, add_store  # noqa: E402

PG_ADMIN = os.environ.get("PILOT_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_URL = PG_ADMIN.rsplit("/", 1)[0] + "/pilot_plan_bench"
WEEKS = 24


def load(url: str, customers: int, transactions: int, stores: int) -> None:
    """Regions, stores, groups, customers and `WEEKS` weeks of transactions, set-based."""
    app = create_app({"DATABASE_URL": url, "AUTO_MIGRATE": False})
    with app.app_context():
        upgrade(db.engine)
        s = db.session
        rng = random.Random(3)
        add_regions(s)
        for i in range(stores):
            add_store(s, rng, i)
        add_groups(s)
        create_programme(s, CLI.actor, {"key": "bench", "name": "Bench", "variants": [CONTROL, BONUS]})
        s.execute(text(
            "INSERT INTO customers (external_id, home_store_id, age_band, household_size, children, attributes, "
            f"created_at, updated_at) SELECT 'B' || n, 1 + n % {stores}, (ARRAY['18-24','25-34','35-44','45-54',"
            "'55-64','65+'])[1 + n % 6], 1 + (n / 7) % 4, (n / 5) % 3, '{}', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP "
            f"FROM generate_series(1, {customers}) AS n"))
        s.execute(text(
            "INSERT INTO ingestion_batches (source, actor, method, on_error, status, rows, accepted, duplicates, "
            "conflicts, rejected, customers_created, errors, started_at) VALUES ('bench', 'bench', 'cli', "
            "'reject_batch', 'accepted', 0, 0, 0, 0, 0, 0, '[]', CURRENT_TIMESTAMP)"))
        # the transactions' indexes and unique key are built once after the load (maintaining them row by row
        # took most of the load's time); the plan reads them as it would in production
        indexes = s.execute(text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'transactions' AND "
                                 "indexname NOT IN (SELECT conname FROM pg_constraint)")).all()
        keys = s.execute(text("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = "
                              "CAST('transactions' AS regclass) AND contype = 'u'")).all()
        for name, _ in keys:
            s.execute(text(f'ALTER TABLE transactions DROP CONSTRAINT "{name}"'))
        for name, _ in indexes:
            s.execute(text(f'DROP INDEX "{name}"'))
        s.execute(text("SELECT setseed(0.42)"))
        span = WEEKS * 7 * 86400 - 3600
        # a customer's share of the transactions varies (r0: a skewed pick), so rates differ between customers
        s.execute(text(
            "INSERT INTO transactions (source, event_id, customer_id, store_id, occurred_at, type, amount, items, "
            "discount_cost, points_issued, points_redeemed, channel, batch_id, batch_row, received_at) "
            "SELECT 'bench', 'e' || n, c, 1 + c % :stores, CAST(:first AS timestamptz) + (r2 * :span) * "
            "interval '1 second', 'sale', round(CAST(exp(3.2 + 0.6 * sqrt(-2 * ln(r1 + 1e-12)) * cos(6.2832 * r3)) "
            "AS numeric), 2), 1 + n % 9, NULL, 0, 0, 'store', 1, n, CURRENT_TIMESTAMP FROM ("
            "SELECT n, 1 + CAST(floor(power(random(), 1.5) * :customers) AS BIGINT) AS c, random() AS r1, "
            f"random() AS r2, random() AS r3 FROM generate_series(1, {transactions}) AS n) AS t"),
            {"first": utcnow() - timedelta(weeks=WEEKS), "span": span, "stores": stores, "customers": customers})
        for name, definition in keys:
            s.execute(text(f'ALTER TABLE transactions ADD CONSTRAINT "{name}" {definition}'))
        for _, definition in indexes:
            s.execute(text(definition))
        s.commit()
        s.execute(text("ANALYZE"))
        s.commit()
    with app.app_context():
        db.engine.dispose()


def measure(url: str) -> dict:
    """One plan of a customer pilot over every store, one store selection of 20 stores over all of them."""
    app = create_app({"DATABASE_URL": url, "AUTO_MIGRATE": False})
    regions = [c for c, _ in REGIONS]
    body = {"programme": "bench", "unit": "customer", "primary_metric": "spend_per_customer", "alpha": 0.05,
            "power": 0.8, "mde": 0.02, "start": utcnow(), "weeks": 8, "history_weeks": 8, "simulations": 200,
            "seed": 0, "stages": [{"region_codes": regions, "allocation": {"control": 0.5, "bonus": 0.5}}]}
    with app.app_context():
        started = time.perf_counter()
        plan = plan_config(db.session, body)
        plan_seconds = time.perf_counter() - started
        started = time.perf_counter()
        designs = propose_config(db.session, {**body, "unit": "store", "mde": 0.05, "stores": 20, "include": [],
                                              "exclude": [], "designs": 5, "max_share_at_risk": None})
        selection_seconds = time.perf_counter() - started
        db.session.rollback()
        db.engine.dispose()
    scored = len(designs["designs"])
    return {"plan_seconds": round(plan_seconds, 2), "store_selection_seconds": round(selection_seconds, 2),
            "simulations": {"plan": plan["simulated"]["simulations"],
                            "store_selection": f"up to {SELECTION_SIMULATIONS} per design"},
            "plan_timings": plan["timings"], "units": plan["eligible"]["customers"], "designs": scored, "candidates": designs["candidates"],
            "top_design_mde": designs["designs"][0]["mde_rel"] if scored else None,
            "plan_mde": plan["analytic"]["mde_rel"], "plan_power_simulated": plan["simulated"]["power"]}


def main() -> None:
    customers, transactions, stores = (int(a) for a in (sys.argv[1:4] if len(sys.argv) > 3
                                                        else (1_000_000, 10_000_000, 200)))
    admin = create_engine(PG_ADMIN.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("DROP DATABASE IF EXISTS pilot_plan_bench WITH (FORCE)"))
        conn.execute(text("CREATE DATABASE pilot_plan_bench"))
    try:
        started = time.perf_counter()
        load(PG_URL, customers, transactions, stores)
        load_seconds = time.perf_counter() - started
        figures = measure(PG_URL)
        print(json.dumps({**figures, "customers": customers, "transactions": transactions, "stores": stores,
                          "load_seconds": round(load_seconds, 1)}))
    finally:
        if not os.environ.get("PILOT_BENCH_KEEP"):  # keep the loaded database for profiling by hand
            with admin.connect() as conn:
                conn.execute(text("DROP DATABASE IF EXISTS pilot_plan_bench WITH (FORCE)"))
        admin.dispose()


if __name__ == "__main__":
    main()
