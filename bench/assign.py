"""Assignment speed: in-process bucketing, HTTP on the production server, and bulk of 1M customers.

Prints one JSON line with bucket_decisions_per_s, http_assign_per_s, http_assign_p50_ms,
http_assign_p99_ms, http_trivial_per_s, ratio_vs_trivial, bulk_1m_sqlite_s, bulk_1m_postgres_s
(plus the same HTTP figures for repeat customers; new customers with the lean till path off, through
Flask's full request cycle (http_view_assign_per_s); the floor, a bench-only route of the same app
that stores one row and nothing else, bench/floor_wsgi.py; the till's own two statements with the
least Python around them, outside Flask (http_till_sql_per_s, the same file); and the CPU milliseconds per request of
the app's workers and of PostgreSQL for each load). Targets (2 cores): HTTP >= 1,000 assignments/s,
p99 <= 25 ms, ratio >= 0.3, bulk 1M <= 20 s on PostgreSQL.

Needs wrk (Debian package) for the HTTP load and a PostgreSQL server (PILOT_BENCH_POSTGRES_URL,
default postgresql://postgres@127.0.0.1:5432/postgres; a database pilot_bench is created and dropped).
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cpu import postmaster, tree_cpu_seconds  # noqa: E402
from bench.server import Server  # noqa: E402
from pilot import create_app  # noqa: E402
from pilot.assignment import Holdout, assign_bulk  # noqa: E402
from pilot.auth import issue_token  # noqa: E402
from pilot.bucketing import variant_for  # noqa: E402
from pilot.db import db  # noqa: E402
from pilot.demo import load_demo  # noqa: E402
from pilot.migrate import upgrade  # noqa: E402
from pilot.programmes import get_programme  # noqa: E402
from pilot.rollout import create_pilot, transition  # noqa: E402
from pilot.synthetic import REGIONS  # noqa: E402

PG_ADMIN = os.environ.get("PILOT_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_URL = PG_ADMIN.rsplit("/", 1)[0] + "/pilot_bench"
WEIGHTS = {"control": 0.25, "discount5": 0.25, "tiers": 0.25, "bonus": 0.25}
LUA_NEW = """
local n = 0
local id = 0
setup = function(thread) id = id + 1; thread:set("tid", id) end
request = function()
  n = n + 1
  local body = string.format('{"customer":"new-RUN-%d-%d","store":"S001","new_customer":{"home_store":"S001"}}', tid, n)
  return wrk.format("POST", "/api/v1/pilots/card-pilot/assignments", nil, body)
end
"""
LUA_REPEAT = """
local n = 0
request = function()
  n = n + 1
  local body = string.format('{"customer":"C%06d"}', (n % 20000) + 1)
  return wrk.format("POST", "/api/v1/pilots/card-pilot/assignments", nil, body)
end
"""


def bucketing() -> float:
    n = 200_000
    started = time.perf_counter()
    for i in range(n):
        variant_for("bench-salt", f"C{i}", WEIGHTS)
    return n / (time.perf_counter() - started)


def prepared(url: str, customers: int = 20_000) -> tuple:
    app = create_app({"DATABASE_URL": url, "AUTO_MIGRATE": False})
    with app.app_context():
        upgrade(db.engine)
        load_demo(db.session, customers=customers)
        _, feed = issue_token(db.session, "bench feed", "feed", None)
        db.session.commit()
    return app, feed


def wrk(port: int, secret: str, script: str | None, path: str, seconds: int = 10) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write((script or "") + f'\nwrk.headers["Authorization"] = "Bearer {secret}"\n'
                'wrk.headers["Content-Type"] = "application/json"\n')
    out = subprocess.run(["wrk", "-t2", "-c16", f"-d{seconds}s", "--latency", "-s", f.name,
                          f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=True).stdout
    os.unlink(f.name)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"wrk saw {errors.group(1)} failed responses:\n{out}")

    def ms(label: str) -> float:
        value, unit = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]

    return {"per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), "p50_ms": ms("50%"),
            "p99_ms": ms("99%")}


def measured(server: Server, port: int, secret: str, script: str | None, path: str, seconds: int = 10) -> dict:
    """wrk's figures plus the CPU milliseconds per request of the server's process tree (gunicorn's
    master and workers, bench/cpu.py) and of PostgreSQL's (this machine's, so other load on it counts)."""
    pg = postmaster()
    app0, pg0 = tree_cpu_seconds(server.proc.pid), tree_cpu_seconds(pg) if pg else None
    figures = wrk(port, secret, script, path, seconds)
    requests = figures["per_s"] * seconds
    figures["app_cpu_ms"] = round((tree_cpu_seconds(server.proc.pid) - app0) / requests * 1000, 3)
    figures["pg_cpu_ms"] = round((tree_cpu_seconds(pg) - pg0) / requests * 1000, 3) if pg else None
    return figures


def http(url: str) -> dict:
    app, feed = prepared(url)
    with app.app_context():
        db.engine.dispose()
    port = 8765
    server = Server(url, port)
    try:
        # each run its own customer ids: a warm-up's customers would come back as repeats
        wrk(port, feed, LUA_NEW.replace("RUN", "warm"), "/", 3)  # warm up both workers
        new = measured(server, port, feed, LUA_NEW.replace("RUN", "measured"), "/")
        wrk(port, feed, LUA_REPEAT, "/")
        wrk(port, feed, LUA_REPEAT, "/")
        repeat = measured(server, port, feed, LUA_REPEAT, "/")
        trivial = measured(server, port, feed, None, "/healthz")
    finally:
        server.stop()
    # the same new-customer load through Flask's full request cycle (the lean till path off: pilot/api.fast_assignment.py)
    server = Server(url, port, env={"PILOT_TILL_LEAN_PATH": "0"})
    try:
        wrk(port, feed, LUA_NEW.replace("RUN", "warm-view"), "/", 3)
        view = measured(server, port, feed, LUA_NEW.replace("RUN", "measured-view"), "/")
    finally:
        server.stop()
    # The floor: the same app, server and load, on a bench-only route that stores one row and does
    # nothing else (bench/floor_wsgi.py) -- what any assignment costs at least on this stack
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE bench_floor (id BIGSERIAL PRIMARY KEY, customer TEXT UNIQUE)"))
    engine.dispose()
    server = Server(url, port, "bench.floor_wsgi:app")
    floor_lua = LUA_NEW.replace("/api/v1/pilots/card-pilot/assignments", "/bench/floor")
    # and the till's own two statements with the least Python around them (bench/floor_wsgi.py)
    sql_lua = LUA_NEW.replace("/api/v1/pilots/card-pilot/assignments", "/bench/till_sql")
    try:
        wrk(port, feed, floor_lua.replace("RUN", "warm"), "/", 3)
        floor = measured(server, port, feed, floor_lua.replace("RUN", "measured"), "/")
        wrk(port, feed, sql_lua.replace("RUN", "sql-warm"), "/", 3)  # (customers the app's runs did not create)
        till_sql = measured(server, port, feed, sql_lua.replace("RUN", "sql-measured"), "/")
    finally:
        server.stop()
    return {"new": new, "repeat": repeat, "trivial": trivial, "floor": floor, "view": view, "till_sql": till_sql}


def bulk(url: str) -> float:
    app, _ = prepared(url, customers=0)
    with app.app_context():
        series = ("SELECT g AS n FROM generate_series(1, 1000000) AS g" if url.startswith("postgresql")
                  else "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 1000000) "
                       "SELECT n FROM s")
        db.session.execute(text(
            "INSERT INTO customers (external_id, home_store_id, attributes, created_at, updated_at) "
            f"SELECT 'B' || n, (n % 60) + 1, '{{}}', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP FROM ({series}) AS t"))
        programme = get_programme(db.session, "card2027")
        pilot = create_pilot(db.session, "bench", programme, {
            "key": "bulk", "name": "Bulk", "unit": "customer", "layer": "bulk", "primary_metric": "spend_per_customer",
            "stages": [{"region_codes": [c for c, _ in REGIONS], "allocation": WEIGHTS}]})
        transition(db.session, "bench", pilot, "start")
        db.session.commit()
        started = time.perf_counter()
        counts = assign_bulk(db.session, pilot, Holdout())
        db.session.commit()
        seconds = time.perf_counter() - started
        assert counts["assigned_now"] == 1_000_000, counts
        db.session.close()
        db.engine.dispose()
    return seconds


def main() -> None:
    figures = {"bucket_decisions_per_s": round(bucketing())}
    admin = create_engine(PG_ADMIN.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    tmp = Path(tempfile.mkdtemp())
    try:
        for name in ("http", "bulk"):
            with admin.connect() as conn:
                conn.execute(text("DROP DATABASE IF EXISTS pilot_bench"))
                conn.execute(text("CREATE DATABASE pilot_bench"))
            if name == "http":
                h = http(PG_URL)
                figures.update(http_assign_per_s=h["new"]["per_s"], http_assign_p50_ms=h["new"]["p50_ms"],
                               http_assign_p99_ms=h["new"]["p99_ms"], http_repeat_per_s=h["repeat"]["per_s"],
                               http_repeat_p50_ms=h["repeat"]["p50_ms"], http_repeat_p99_ms=h["repeat"]["p99_ms"],
                               http_trivial_per_s=h["trivial"]["per_s"],
                               ratio_vs_trivial=round(h["new"]["per_s"] / h["trivial"]["per_s"], 3),
                               http_view_assign_per_s=h["view"]["per_s"],
                               view_ratio_vs_trivial=round(h["view"]["per_s"] / h["trivial"]["per_s"], 3),
                               http_floor_per_s=h["floor"]["per_s"],
                               floor_ratio_vs_trivial=round(h["floor"]["per_s"] / h["trivial"]["per_s"], 3),
                               http_till_sql_per_s=h["till_sql"]["per_s"],
                               till_sql_ratio_vs_trivial=round(h["till_sql"]["per_s"] / h["trivial"]["per_s"], 3),
                               **{f"{part}_cpu_ms_{kind}": h[kind][f"{part}_cpu_ms"] for kind in
                                  ("new", "repeat", "trivial", "floor", "view", "till_sql") for part in ("app", "pg")})
            else:
                figures["bulk_1m_postgres_s"] = round(bulk(PG_URL), 2)
        figures["bulk_1m_sqlite_s"] = round(bulk(f"sqlite:///{tmp}/bulk.db"), 2)
    finally:
        with admin.connect() as conn:
            conn.execute(text("DROP DATABASE IF EXISTS pilot_bench WITH (FORCE)"))
        admin.dispose()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
