"""Ingestion speed: a CSV of 2,000,000 transactions streamed to the production server.

Prints one JSON line with csv_postgres_rows_per_s, copy_rows_per_s, ratio_vs_copy,
json_postgres_rows_per_s, csv_sqlite_rows_per_s, replay_rows_added, peak_rss_mb (plus replay
speed and the peak memory of a ten times smaller upload, to show memory is flat in file size; where
the upload's time went, stage_seconds and write_seconds, and ratio_ceiling_write_only = \\copy ÷ the
set-based write alone; and \\copy into a table with the transactions table's unique key and indexes),
bomb_peak_rss_mb (the peak worker memory while a gzip bomb is refused: a header and 1 GiB of one
character without a line break, about 1 MB gzipped) and cut_upload_rows_added (the rows stored from an
upload whose client sent half of its Content-Length and closed: must be 0).
Targets (2 cores): CSV into PostgreSQL >= 50,000 rows/s and >= 0.25 of psql \\copy; JSON >= 20,000
rows/s; peak memory flat in file size; bomb_peak_rss_mb <= 300; cut_upload_rows_added == 0.

Needs curl and psql, and a PostgreSQL server (PILOT_BENCH_POSTGRES_URL, default
postgresql://postgres@127.0.0.1:5432/postgres; a database pilot_bench is created and dropped).
Usage: python bench/ingest.py [ROWS]   (ROWS: 2,000,000 by default; fewer for a quick run; port
PILOT_BENCH_PORT, default 8766)
"""
import csv
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.server import Server  # noqa: E402
from pilot import create_app  # noqa: E402
from pilot.auth import issue_token  # noqa: E402
from pilot.db import db  # noqa: E402
from pilot.demo import load_demo  # noqa: E402
from pilot.ingestion import FIELDS  # noqa: E402
from pilot.migrate import upgrade  # noqa: E402

PG_ADMIN = os.environ.get("PILOT_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_URL = PG_ADMIN.rsplit("/", 1)[0] + "/pilot_bench"
PORT = int(os.environ.get("PILOT_BENCH_PORT", "8766"))
START = datetime(2026, 9, 1, tzinfo=UTC)


def write_csv(path: Path, rows: int, prefix: str = "e") -> None:
    """Realistic rows: 20,000 demo customers, 60 stores, 8% refunds, some feed costs."""
    rng = random.Random(1)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(FIELDS)
        for i in range(rows):
            refund = rng.random() < 0.08
            amount = round(rng.lognormvariate(3.2, 0.8), 2)
            when = START + timedelta(seconds=i * 2 + rng.randint(0, 3600))
            w.writerow((f"{prefix}{i}", f"C{rng.randint(1, 20000):06d}", f"S{rng.randint(1, 60):03d}",
                        when.isoformat(), "refund" if refund else "sale", -amount if refund else amount,
                        -1 if refund else rng.randint(1, 12), "" if rng.random() < 0.5 else round(amount * 0.05, 2),
                        int(amount), 0, "store" if rng.random() < 0.8 else "online"))


def prepared(url: str) -> str:
    app = create_app({"DATABASE_URL": url, "AUTO_MIGRATE": False})
    with app.app_context():
        upgrade(db.engine)
        load_demo(db.session)
        _, feed = issue_token(db.session, "bench feed", "feed", None)
        db.session.commit()
        db.engine.dispose()
    return feed


def upload(path: Path, secret: str, source: str = "default", port: int = PORT,
           feed: str = "transactions") -> tuple[float, dict]:
    """POST a CSV file to /api/v1/{feed}/upload with curl; its seconds and the outcome."""
    started = time.perf_counter()
    out = subprocess.run(["curl", "-sS", "-X", "POST", "-T", str(path), "-H", "Content-Type: text/csv",
                          "-H", f"Authorization: Bearer {secret}",
                          f"http://127.0.0.1:{port}/api/v1/{feed}/upload?source={source}"],
                         capture_output=True, text=True, check=True).stdout
    seconds = time.perf_counter() - started
    result = json.loads(out)
    if "error" in result:
        raise SystemExit(f"upload failed: {out[:2000]}")
    return seconds, result


def json_batches(path: Path, secret: str, rows: int, size: int = 10_000) -> float:
    """Post the first rows of the file as JSON batches over one keep-alive connection."""
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        batches, batch = [], []
        for i, r in enumerate(reader):
            if i >= rows:
                break
            batch.append({k: v for k, v in r.items() if v != ""})
            if len(batch) == size:
                batches.append((size, json.dumps({"transactions": batch})))
                batch = []
        if batch:  # the last, shorter batch (all of them when rows < size)
            batches.append((len(batch), json.dumps({"transactions": batch})))
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=600)
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    started = time.perf_counter()
    for expected, body in batches:
        conn.request("POST", "/api/v1/transactions?source=json", body=body, headers=headers)
        response = conn.getresponse()
        answer = json.loads(response.read())
        if response.status != 200 or answer["accepted"] != expected:
            raise SystemExit(f"JSON batch failed: {str(answer)[:2000]}")
    return rows / (time.perf_counter() - started)


def gzip_bomb(path: Path, gigabytes: int = 1) -> None:
    """A gzipped CSV: the header, then `gigabytes` GiB of one character and no line break."""
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b"a" * 2**20
    with path.open("wb") as f:
        f.write(z.compress(",".join(FIELDS).encode() + b"\n"))
        for _ in range(gigabytes * 1024):
            f.write(z.compress(block))
        f.write(z.flush())


def bomb_upload(path: Path, secret: str) -> int:
    """Post the bomb; the HTTP status (a 413 naming PILOT_MAX_LINE_BYTES is expected)."""
    out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "--data-binary",
                          f"@{path}", "-H", "Expect:", "-H", "Content-Type: text/csv", "-H", "Content-Encoding: gzip",
                          "-H", f"Authorization: Bearer {secret}", f"http://127.0.0.1:{PORT}/api/v1/transactions/upload"],
                         capture_output=True, text=True).stdout
    return int(out or 0)


def cut_upload(path: Path, secret: str) -> None:
    """Send the file's Content-Length and then half of it (ending on a line break), and close."""
    body = path.read_bytes()
    half = body.rindex(b"\n", 0, len(body) // 2) + 1
    head = (f"POST /api/v1/transactions/upload?source=cut HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/csv\r\n"
            f"Authorization: Bearer {secret}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", PORT), timeout=600) as s:
        s.sendall(head + body[:half])
        s.shutdown(socket.SHUT_WR)
        while s.recv(65536):  # the answer (a 400), then the close
            pass


def stored_rows(url: str, table: str = "transactions") -> int:
    """The rows of `table` in the benchmark's database."""
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        count = conn.scalar(text(f"SELECT count(*) FROM {table}"))
    engine.dispose()
    return count


def psql_copy(path: Path, indexed: bool = False) -> float:
    """Seconds of psql \\copy of the file into a bare table; `indexed`: one with the transactions
    table's unique key and indexes (event id; customer, time; store, time; time)."""
    sql = ("DROP TABLE IF EXISTS bare; CREATE TABLE bare (event_id text, customer text, store text, "
           "occurred_at timestamptz, type text, amount numeric(16,4), items int, discount_cost numeric(16,4), "
           "points_issued int, points_redeemed int, channel text);")
    if indexed:
        sql += ("ALTER TABLE bare ADD COLUMN id BIGSERIAL PRIMARY KEY; ALTER TABLE bare ADD UNIQUE (event_id); "
                "CREATE INDEX ON bare (customer, occurred_at); CREATE INDEX ON bare (store, occurred_at); "
                "CREATE INDEX ON bare (occurred_at);")
    subprocess.run(["psql", "-q", PG_URL, "-c", sql], check=True, capture_output=True)
    started = time.perf_counter()
    columns = "(event_id, customer, store, occurred_at, type, amount, items, discount_cost, points_issued, " \
              "points_redeemed, channel)"
    subprocess.run(["psql", "-q", PG_URL, "-c", f"\\copy bare {columns} FROM '{path}' CSV HEADER"], check=True,
                   capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000_000
    tmp = Path(tempfile.mkdtemp())
    big, small = tmp / "big.csv", tmp / "small.csv"
    write_csv(big, rows)
    write_csv(small, rows // 10, prefix="s")
    figures: dict = {"rows": rows, "file_mb": round(big.stat().st_size / 2**20, 1)}
    admin = create_engine(PG_ADMIN.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text("DROP DATABASE IF EXISTS pilot_bench"))
            conn.execute(text("CREATE DATABASE pilot_bench"))
        secret = prepared(PG_URL)
        server = Server(PG_URL, PORT, timeout=1200)
        try:
            upload(small, secret, source="small")
            figures["peak_rss_mb_small_file"] = server.peak_rss_mb()
        finally:
            server.stop()
        bomb = tmp / "bomb.csv.gz"
        gzip_bomb(bomb)
        server = Server(PG_URL, PORT)  # pilot/server.py's timeout: a refusal must not need more
        try:
            figures["bomb_status"] = bomb_upload(bomb, secret)
            figures["bomb_peak_rss_mb"] = server.peak_rss_mb()
            before = stored_rows(PG_URL)
            cut_upload(small, secret)
            figures["cut_upload_rows_added"] = stored_rows(PG_URL) - before
        finally:
            server.stop()
        server = Server(PG_URL, PORT, timeout=1200)
        try:
            seconds, result = upload(big, secret)
            figures["csv_postgres_rows_per_s"] = round(rows / seconds)
            figures["peak_rss_mb"] = server.peak_rss_mb()
            assert result["accepted"] == rows, result
            # reading + validating + COPY into staging, then the INSERT ... SELECT ... ON CONFLICT
            figures["stage_seconds"], figures["write_seconds"] = (result["timings"][k] for k in
                                                                  ("stage_seconds", "write_seconds"))
            seconds, result = upload(big, secret)
            figures["replay_rows_per_s"] = round(rows / seconds)
            figures["replay_rows_added"] = result["accepted"]
            assert result["duplicates"] == rows, result
            figures["json_postgres_rows_per_s"] = round(json_batches(big, secret, min(rows, 200_000)))
        finally:
            server.stop()
        copy_seconds = psql_copy(big)
        figures["copy_rows_per_s"] = round(rows / copy_seconds)
        figures["ratio_vs_copy"] = round(figures["csv_postgres_rows_per_s"] / figures["copy_rows_per_s"], 3)
        # the most ratio_vs_copy could be if reading, validating and staging took no time at all
        figures["ratio_ceiling_write_only"] = round(copy_seconds / figures["write_seconds"], 3)
        indexed_seconds = psql_copy(big, indexed=True)
        figures["copy_indexed_rows_per_s"] = round(rows / indexed_seconds)
        figures["ratio_vs_copy_indexed"] = round(figures["csv_postgres_rows_per_s"] / figures["copy_indexed_rows_per_s"],
                                                 3)
        sqlite_url = f"sqlite:///{tmp / 'bench.db'}"
        secret = prepared(sqlite_url)
        server = Server(sqlite_url, PORT, timeout=1200)
        try:
            seconds, result = upload(big, secret)
            assert result["accepted"] == rows, result
            figures["csv_sqlite_rows_per_s"] = round(rows / seconds)
        finally:
            server.stop()
    finally:
        with admin.connect() as conn:
            conn.execute(text("DROP DATABASE IF EXISTS pilot_bench WITH (FORCE)"))
        for p in tmp.iterdir():
            p.unlink()
        tmp.rmdir()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
