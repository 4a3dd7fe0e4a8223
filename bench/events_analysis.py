"""The analysis half of bench/events.py: a full analysis with 3 custom event metrics on top of the
transaction metrics, against the same analysis without them, on the same data.

`analysis_half(url, key)` times (each in a fresh process, as bench/analyse.py does) one analysis of
pilot `key` with no defined metrics (the shipped ones are left out of both runs), then with three event
metrics — app sessions per customer (count, with its pre-period covariate), NPS (the last answer's score
among those who answered, with its covariate) and referrals per customer (count) — and times it again: `analysis_without_events_seconds`,
`analysis_with_events_seconds` and `events_overhead`, their ratio (target ≤ 1.5 on 2 cores).

Standalone (PostgreSQL; PILOT_BENCH_POSTGRES_URL as in bench/assign.py): loads customers and
transactions as bench/analyse.py does, then EVENTS events set-based, and prints one JSON line.
Usage: python bench/events_analysis.py [CUSTOMERS TRANSACTIONS EVENTS]
"""
import json
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pilot import create_app  # noqa: E402
from pilot.auth import CLI  # noqa: E402
from pilot.db import db  # noqa: E402

EVENT_TYPES = ("app_session", "survey_nps", "referral", "points_redeemed")
METRICS = [
    {"key": "bench_app_sessions", "name": "App sessions", "description": "", "good_direction": "up", "kind": "mean",
     "covariate": True, "source": "events", "type": "app_session", "aggregation": "count"},
    {"key": "bench_nps", "name": "NPS", "description": "", "good_direction": "up", "kind": "mean", "covariate": True,
     "source": "events", "type": "survey_nps", "aggregation": "nps"},
    {"key": "bench_referrals", "name": "Referrals", "description": "", "good_direction": "up", "kind": "mean",
     "source": "events", "type": "referral", "aggregation": "count"},
]


def analyse_once(url: str, key: str, keep: str) -> None:
    """Child process: one full analysis of the pilot measuring the defined metrics `keep` (comma-separated
    keys) only — the shipped definitions are always current, and would be measured in both runs —;
    prints its seconds and shape."""
    from pilot import analysis_runs
    from pilot.rollout import get_pilot
    every = analysis_runs.run_definitions
    keys = set(filter(None, keep.split(",")))

    def only(session, pilot, engine):
        out = every(session, pilot, engine)
        return {**out, "defined_metrics": [d for d in out["defined_metrics"] if d["key"] in keys]}
    analysis_runs.run_definitions = only
    app = create_app({"DATABASE_URL": url, "AUTO_MIGRATE": False})
    with app.app_context():
        started = time.perf_counter()
        run = analysis_runs.create_run(db.session, CLI.actor, get_pilot(db.session, key))
        analysis_runs.execute(db.session, run)
        db.session.commit()
        seconds = time.perf_counter() - started
        print(json.dumps({"seconds": seconds, "defined": len(run.config.get("defined_metrics", [])),
                          "metrics": len({m["metric"] for m in run.results["metrics"]}),
                          "aggregate_s": run.timings["aggregate_s"]}))


def _child(url: str, key: str, keep: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--analyse-once", url, key, ",".join(keep)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def analysis_half(url: str, key: str = "bench") -> dict:
    """Time the pilot's analysis without defined metrics, then with the three event metrics (the bench
    database's metric definitions are replaced by those three)."""
    from pilot.metric_definitions import current, define
    app = create_app({"DATABASE_URL": url, "AUTO_MIGRATE": False})
    with app.app_context():
        for body in METRICS:
            if current(db.session, body["key"]) is None:
                define(db.session, CLI.actor, body)
        db.session.commit()
    keys = [m["key"] for m in METRICS]
    _child(url, key, [])  # warm the caches the same way for both measurements
    without = _child(url, key, [])
    with_events = _child(url, key, keys)
    assert without["defined"] == 0 and with_events["defined"] == len(METRICS), (without, with_events)
    return {"analysis_without_events_seconds": round(without["seconds"], 3),
            "analysis_with_events_seconds": round(with_events["seconds"], 3),
            "events_overhead": round(with_events["seconds"] / without["seconds"], 3),
            "aggregate_without_s": without["aggregate_s"], "aggregate_with_s": with_events["aggregate_s"]}


def prepare_pilot(url: str, transactions: int, key: str = "bench", weeks: int = 8) -> None:
    """On a database with stores, customers and events but no pilot (bench/events.py's ingest half): a
    started two-arm customer pilot over every store, everyone assigned, started `weeks` before the
    latest event, and `transactions` sales set-based over its pre-period and window (untimed)."""
    from pilot.assignment import Holdout, assign_bulk
    from pilot.programmes import create_programme
    from pilot.rollout import create_pilot, transition
    from pilot.simulate import BONUS, CONTROL, backdate
    app = create_app({"DATABASE_URL": url, "AUTO_MIGRATE": False})
    with app.app_context():
        s = db.session
        s.execute(text("UPDATE customers SET home_store_id = (SELECT min(id) FROM stores) + id % "
                       "(SELECT count(*) FROM stores) WHERE home_store_id IS NULL"))
        programme = create_programme(s, CLI.actor, {"key": key, "name": key, "variants": [CONTROL, BONUS]})
        pilot = create_pilot(s, CLI.actor, programme, {
            "key": key, "name": key, "unit": "customer", "layer": key, "salt": key,
            "primary_metric": "spend_per_customer", "guardrails": [{"metric": "spend_per_visit", "max_harm": 0.05}],
            "stages": [{"region_codes": list(s.scalars(text("SELECT code FROM regions"))),
                        "allocation": {"control": 0.5, "bonus": 0.5}}]})
        transition(s, CLI.actor, pilot, "start")
        assign_bulk(s, pilot, Holdout())
        start = s.scalar(text("SELECT max(occurred_at) FROM customer_events")) - timedelta(weeks=weeks)
        backdate(s, pilot, start)
        low, high = s.execute(text("SELECT min(id), max(id) FROM customers")).one()
        s.execute(text("SELECT setseed(0.29)"))
        s.execute(text(
            "INSERT INTO transactions (source, event_id, customer_id, store_id, occurred_at, type, amount, items, "
            "discount_cost, points_issued, points_redeemed, channel, batch_id, batch_row, received_at) "
            f"SELECT 'bench', 't' || n, {low} + (CAST(n AS BIGINT) * 7919) % {high - low + 1}, "
            "(SELECT min(id) FROM stores) + n % (SELECT count(*) FROM stores), CAST(:first AS timestamptz) + (r1 * :span) * interval '1 second', 'sale', "
            "round(CAST(5 + 60 * r2 * r2 AS numeric), 2), 1 + n % 9, NULL, 0, 0, 'store', 0, n, now() "
            f"FROM (SELECT g AS n, random() AS r1, random() AS r2 FROM generate_series(1, {transactions}) AS g) AS t"),
            {"first": start - timedelta(weeks=weeks), "span": 2 * weeks * 7 * 86400})
        s.commit()
        s.execute(text("ANALYZE"))
        s.commit()
        db.engine.dispose()


def load_events(url: str, customers: int, events: int, key: str = "bench") -> None:
    """`events` customer events set-based over the pilot's pre-period and window (PostgreSQL)."""
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        start = conn.execute(text("SELECT started_at FROM pilots WHERE key = :k"), {"k": key}).scalar()
        first, span = start - timedelta(weeks=8), 16 * 7 * 86400 - 3600
        types = "ARRAY[" + ", ".join(f"'{t}'" for t in EVENT_TYPES) + "]"
        conn.execute(text("SELECT setseed(0.17)"))
        conn.execute(text(
            "INSERT INTO customer_events (source, event_id, customer_id, store_id, occurred_at, type, value, "
            "attributes, batch_id, batch_row, received_at) "
            f"SELECT 'bench', 'v' || n, 1 + (CAST(n AS BIGINT) * 104729) % {customers}, NULL, "
            f"CAST(:first AS timestamptz) + (r1 * {span}) * interval '1 second', ({types})[1 + n % 4], "
            f"CASE WHEN n % 4 = 1 THEN floor(r2 * 11) WHEN n % 4 = 3 THEN floor(r2 * 500) END, '{{}}', 1, n, now() "
            f"FROM (SELECT g AS n, random() AS r1, random() AS r2 FROM generate_series(1, {events}) AS g) AS t"),
            {"first": first})
        conn.execute(text("ANALYZE customer_events"))


def main() -> None:
    from bench.analyse import PG_ADMIN, PG_URL, load
    customers, transactions, events = (int(x) for x in sys.argv[1:4]) if len(sys.argv) > 3 else \
        (1_000_000, 10_000_000, 5_000_000)
    admin = create_engine(PG_ADMIN.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("DROP DATABASE IF EXISTS pilot_bench"))
        conn.execute(text("CREATE DATABASE pilot_bench"))
    load(PG_URL, customers, transactions)
    load_events(PG_URL, customers, events)
    print(json.dumps({"customers": customers, "transactions": transactions, "events": events,
                      **analysis_half(PG_URL)}))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--analyse-once":
        analyse_once(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        main()
