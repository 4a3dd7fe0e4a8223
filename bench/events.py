"""Customer events (#25): a CSV of 5,000,000 events for 1,000,000 customers streamed to the production server.

Ingest half: events_rows_per_s (POST /api/v1/events/upload through gunicorn into PostgreSQL, the
customers already known), copy_rows_per_s (psql \\copy of the same file into a table with the
customer_events table's unique key and indexes, in the same run) and ratio_vs_copy (target >= 0.4 on
2 cores); replay_rows_added (the same file again: must be 0).
Analysis half (`analysis_half`): analysis_with_events_seconds, analysis_without_events_seconds and their
ratio events_overhead (target <= 1.5), an analysis with 3 custom event metrics on top of the
transaction metrics.

Needs curl and psql, and a PostgreSQL server (PILOT_BENCH_POSTGRES_URL, default
postgresql://postgres@127.0.0.1:5432/postgres; a database pilot_bench_events is created and dropped).
Usage: python bench/events.py [--events N] [--customers N] [--port P]; prints one JSON line of figures.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ingest import PG_ADMIN, stored_rows  # noqa: E402
from bench.ingest import upload as ingest_upload  # noqa: E402
from bench.server import Server  # noqa: E402
from pilot import create_app  # noqa: E402
from pilot.auth import issue_token  # noqa: E402
from pilot.db import db  # noqa: E402
from pilot.migrate import upgrade  # noqa: E402

PG_URL = PG_ADMIN.rsplit("/", 1)[0] + "/pilot_bench_events"
START = datetime(2026, 6, 1, tzinfo=UTC)
HEADER = ("event_id", "customer", "occurred_at", "type", "value", "store", "attr.channel")
# the demo's mix of signals: mostly app sessions and e-mail opens, some surveys, referrals and complaints
MIX = (("app_session", 0.45), ("email_open", 0.25), ("survey_nps", 0.1), ("points_redeemed", 0.08),
       ("referral", 0.05), ("review", 0.03), ("complaint_opened", 0.025), ("complaint_resolved", 0.015))


def customer_id(i: int) -> str:
    return f"C{i:07d}"


def write_csv(path: Path, events: int, customers: int) -> None:
    """Realistic events: the demo mix of types, NPS answers 0-10, a store on a third, a channel attribute."""
    rng = random.Random(25)
    types, weights = zip(*MIX)
    span = 150 * 86400
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        for i, kind in enumerate(rng.choices(types, weights, k=events)):
            value = rng.choice((10, 9, 9, 8, 8, 7, 6, 5, 3, 10)) if kind == "survey_nps" else ""
            when = START + timedelta(seconds=rng.randrange(span))
            w.writerow((f"v{i}", customer_id(rng.randrange(customers)), when.isoformat(), kind, value,
                        f"S{rng.randint(1, 60):03d}" if i % 3 == 0 else "", "app" if i % 2 else "web"))


def prepared(url: str, customers: int) -> str:
    """A migrated database with 60 stores and the customers known (created in one statement, untimed)."""
    app = create_app({"DATABASE_URL": url, "AUTO_MIGRATE": False})
    with app.app_context():
        upgrade(db.engine)
        db.session.execute(text("INSERT INTO regions (code, name, created_at) VALUES ('r1', 'Region 1', now())"))
        db.session.execute(text(
            "INSERT INTO stores (code, name, region_id, format, attributes, created_at, updated_at) "
            "SELECT 'S' || lpad(i::text, 3, '0'), 'Store ' || i, (SELECT id FROM regions), 'supermarket', "
            "'{}'::json, now(), now() FROM generate_series(1, 60) i"))
        db.session.execute(text(
            "INSERT INTO customers (external_id, attributes, created_at, updated_at) "
            "SELECT 'C' || lpad(i::text, 7, '0'), '{}'::json, now(), now() FROM generate_series(0, :n - 1) i"),
            {"n": customers})
        _, feed = issue_token(db.session, "bench feed", "feed", None)
        db.session.commit()
        db.engine.dispose()
    return feed


def upload(path: Path, secret: str, port: int) -> tuple[float, dict]:
    return ingest_upload(path, secret, source="bench", port=port, feed="events")


def psql_copy(path: Path) -> float:
    """Seconds of psql \\copy of the file into a table with customer_events' unique key and indexes."""
    sql = ("DROP TABLE IF EXISTS bare_events; CREATE TABLE bare_events (id BIGSERIAL PRIMARY KEY, "
           "event_id text NOT NULL UNIQUE, customer text NOT NULL, occurred_at timestamptz NOT NULL, "
           "type text NOT NULL, value double precision, store text, channel text); "
           "CREATE INDEX ON bare_events (customer, occurred_at); CREATE INDEX ON bare_events (type, occurred_at);")
    subprocess.run(["psql", "-q", PG_URL, "-c", sql], check=True, capture_output=True)
    started = time.perf_counter()
    columns = "(event_id, customer, occurred_at, type, value, store, channel)"
    subprocess.run(["psql", "-q", PG_URL, "-c", f"\\copy bare_events {columns} FROM '{path}' CSV HEADER"],
                   check=True, capture_output=True)
    return time.perf_counter() - started


def stored_events(url: str) -> int:
    return stored_rows(url, "customer_events")


def ingest_half(path: Path, events: int, customers: int, port: int) -> dict[str, Any]:
    """events_rows_per_s, replay_rows_added, copy_rows_per_s, ratio_vs_copy (and where the time went)."""
    figures: dict[str, Any] = {}
    secret = prepared(PG_URL, customers)
    server = Server(PG_URL, port, timeout=3600)
    try:
        seconds, result = upload(path, secret, port)
        assert result["accepted"] == events, result
        figures["events_rows_per_s"] = round(events / seconds)
        figures["stage_seconds"], figures["write_seconds"] = (result["timings"][k] for k in
                                                              ("stage_seconds", "write_seconds"))
        figures["peak_rss_mb"] = server.peak_rss_mb()
        seconds, result = upload(path, secret, port)
        figures["replay_rows_per_s"] = round(events / seconds)
        figures["replay_rows_added"] = result["accepted"]
        assert result["duplicates"] == events, result
    finally:
        server.stop()
    assert stored_events(PG_URL) == events
    figures["copy_rows_per_s"] = round(events / psql_copy(path))
    figures["ratio_vs_copy"] = round(figures["events_rows_per_s"] / figures["copy_rows_per_s"], 3)
    return figures


def analysis_half(url: str, events: int, customers: int) -> dict[str, Any]:
    """The analysis half (#25, helper A): on the database the ingest half filled (`customer_events` holds the
    events of customers C0000000…), a pilot over those customers with 5 sales each (untimed), then an
    analysis with 3 custom event metrics on top of the transaction metrics and the same analysis without
    them: analysis_with_events_seconds, analysis_without_events_seconds, events_overhead (bench/events_analysis.py)."""
    from bench import events_analysis
    events_analysis.prepare_pilot(url, 5 * customers)
    return events_analysis.analysis_half(url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PILOT_BENCH_PORT", "8767")))
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    path = tmp / "events.csv"
    write_csv(path, args.events, args.customers)
    figures: dict[str, Any] = {"events": args.events, "customers": args.customers,
                               "file_mb": round(path.stat().st_size / 2**20, 1)}
    admin = create_engine(PG_ADMIN.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text("DROP DATABASE IF EXISTS pilot_bench_events"))
            conn.execute(text("CREATE DATABASE pilot_bench_events"))
        figures.update(ingest_half(path, args.events, args.customers, args.port))
        figures.update(analysis_half(PG_URL, args.events, args.customers))
    finally:
        with admin.connect() as conn:
            conn.execute(text("DROP DATABASE IF EXISTS pilot_bench_events WITH (FORCE)"))
        admin.dispose()
        path.unlink()
        tmp.rmdir()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
