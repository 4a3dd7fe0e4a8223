"""Uploads under a faulty network, a failing database and hostile bodies (issue #20, defects 1-5 and
the row part of 8).

The cut, truncated, slow, bomb and database-kill cases talk to a real gunicorn (tests/live.py),
configured as scripts/serve.sh runs it: under gunicorn an early end of a body reads as a normal end
of file, which the Werkzeug test client never shows.
"""
from __future__ import annotations

import gzip
import json
import time
import uuid
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from pilot import create_app, ingestion
from pilot import row_validation as batches_module
from pilot.db import db, make_engine
from pilot.models import Customer, IngestionBatch, Store, Transaction
from tests.factories import as_csv, as_json, count, row
from tests.live import chunked, request_head

ROOT = Path(__file__).resolve().parents[1]
UPLOAD = "/api/v1/transactions/upload"


def batches(app) -> list[IngestionBatch]:
    with app.app_context():
        return list(db.session.scalars(select(IngestionBatch).order_by(IngestionBatch.id)))


def line_end_before(body: bytes, at: int) -> int:
    """The offset just after the last newline before `at`."""
    return body.rindex(b"\n", 0, at) + 1


def assert_failed_batch(app, fragment: str) -> None:
    """One batch, ended failed with a reason naming `fragment`, and nothing stored."""
    [batch] = batches(app)
    assert batch.status == "failed", (batch.status, batch.errors)
    assert batch.finished_at is not None
    assert fragment in batch.errors[0]["message"], batch.errors
    assert count(app) == 0 and count(app, Customer) == 0


# -- 1. a body that ends before its Content-Length (or its last chunk) stores nothing --------------

def amounts_last_csv(rows: int) -> bytes:
    """Required columns only, amount last: a cut inside the last field leaves a shorter, valid amount."""
    lines = ["event_id,customer,store,occurred_at,amount"]
    lines += [f"e{i},c{i % 50},T001,2026-10-05T10:00:00+00:00,159.99" for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def assert_incomplete(answer) -> None:
    assert answer.status == 400, answer.raw[:500]
    assert answer.json()["error"]["code"] == "incomplete_body"


def test_an_upload_cut_short_stores_nothing_and_its_batch_ends_failed(app, live_server, auth):
    """Cut after a newline, inside the last field (159.99 would arrive as 159.9), or before the last
    chunk: nothing stored, each batch failed with the reason; the same file sent whole is stored."""
    server = live_server()
    headers = {**auth("feed"), "Content-Type": "text/csv"}
    body = amounts_last_csv(4000)
    at = line_end_before(body, len(body) // 2)
    for cut in (at, at - 2):
        assert_incomplete(server.exchange(request_head("POST", UPLOAD, headers, length=len(body)), [body[:cut]]))
    assert_incomplete(server.exchange(request_head("POST", UPLOAD, headers),
                                      chunked([body[:at // 2], body[at // 2:at]], last=False)))
    assert [b.status for b in batches(app)] == ["failed"] * 3
    reasons = [b.errors[0]["message"] for b in batches(app)]
    assert "Content-Length" in reasons[0] and "Content-Length" in reasons[1] and "last chunk" in reasons[2]
    assert count(app) == 0 and count(app, Customer) == 0
    answer = server.exchange(request_head("POST", UPLOAD, headers), chunked([body[:1000], body[1000:at], body[at:]]))
    assert answer.status == 200 and answer.json()["accepted"] == 4000, answer.raw[:500]
    with app.app_context():
        assert db.session.scalar(select(func.min(Transaction.amount))) == 159.99


IMPORTS = {
    "/api/v1/customers/import": "external_id,home_store,age_band\n" + "".join(f"c{i},T001,25-34\n" for i in range(3000)),
    "/api/v1/stores/import": "code,name,region\n" + "".join(f"S{i:05d},Store {i},r1\n" for i in range(3000)),
}
JSON_BATCHES = {
    "/api/v1/transactions": ("feed", {"transactions": as_json([row(i) for i in range(50)])}),
    "/api/v1/customers": ("manager", {"customers": [{"external_id": f"c{i}"} for i in range(50)]}),
    "/api/v1/stores/import": ("manager", {"stores": [{"code": f"S{i}", "name": "n", "region": "r1"} for i in range(50)]}),
}


def test_imports_and_json_batches_cut_short_store_nothing(app, live_server, auth):
    """Customer and store CSV imports cut at half; JSON batches whose part that arrived is a whole JSON
    document (the cut fell in trailing white space): all refused, since the client did not send what
    it said it would."""
    server = live_server()
    for path, csv_text in IMPORTS.items():
        body = csv_text.encode()
        head = request_head("POST", path, {**auth("manager"), "Content-Type": "text/csv"}, length=len(body))
        assert_incomplete(server.exchange(head, [body[:line_end_before(body, len(body) // 2)]]))
    for path, (role, document) in JSON_BATCHES.items():
        body = json.dumps(document).encode() + b" " * 4000
        head = request_head("POST", path, {**auth(role), "Content-Type": "application/json"}, length=len(body))
        assert_incomplete(server.exchange(head, [body[:-2000]]))
        # chunked: cut before the last chunk, and the last chunk without its terminating line
        head = request_head("POST", path, {**auth(role), "Content-Type": "application/json"})
        assert_incomplete(server.exchange(head, list(chunked([body], last=False))))
        assert_incomplete(server.exchange(head, [*chunked([body], last=False), b"0\r\n"]))
    assert count(app) == 0 and count(app, Customer) == 0 and count(app, Store) == 2  # the fixture's two stores


def test_gzip_json_without_its_trailer_is_refused(app, client, auth):
    body = gzip.compress(json.dumps({"transactions": as_json([row(i) for i in range(20)])}).encode())
    r = client.post("/api/v1/transactions", data=body[:-8], headers={
        **auth("feed"), "Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert r.status_code == 400 and r.json["error"]["code"] == "bad_encoding", r.json
    assert count(app) == 0


# -- 2. every batch that starts has a record that ends; a lost database is a 503 -----------------

def test_a_batch_is_recorded_running_before_its_rows_and_ends_failed_on_a_fault(app, tokens, monkeypatch):
    """The running record is committed on its own (another connection sees it, and its heartbeat move,
    while rows stream in), and a fault ends that same record failed with the reason."""
    monkeypatch.setattr(ingestion, "HEARTBEAT_SECONDS", 0)
    seen = []

    def rows():
        yield from ((i, row(i)) for i in range(1, ingestion.CHUNK + 2))  # one chunk staged: one beat
        other = make_engine(app.config["DATABASE_URL"])
        try:
            with other.connect() as conn:
                seen.extend(conn.execute(text("SELECT status, started_at, heartbeat_at FROM ingestion_batches")))
        finally:
            other.dispose()
        raise RuntimeError("the feed broke")

    with app.app_context(), pytest.raises(RuntimeError):
        with ingestion.batch(db.session, "test", "csv") as ingest:
            ingest.add_all(rows())
    [(status, started, beaten)] = seen
    assert status == "running" and str(beaten) > str(started)
    [batch] = batches(app)
    assert batch.status == "failed" and batch.rows == ingestion.CHUNK + 1 and batch.finished_at is not None
    assert "nothing was stored" in batch.errors[0]["message"]
    assert "the feed broke" not in json.dumps(batch.errors)  # internals stay in the log
    assert count(app) == 0


def test_fail_stale_batches_ends_running_batches_without_a_recent_heartbeat(app):
    now = datetime.now(UTC)
    kw = {"source": "s", "actor": "a", "method": "csv", "on_error": "reject_batch"}
    with app.app_context():
        db.session.add_all([
            IngestionBatch(**kw, status="running", started_at=now - timedelta(hours=3), heartbeat_at=now - timedelta(hours=2)),
            IngestionBatch(**kw, status="running", started_at=now - timedelta(hours=3), heartbeat_at=None),
            IngestionBatch(**kw, status="running", started_at=now - timedelta(hours=3), heartbeat_at=now),
            IngestionBatch(**kw, status="accepted", started_at=now - timedelta(hours=3), heartbeat_at=None),
        ])
        db.session.commit()
        assert ingestion.fail_stale_batches(db.session, now - timedelta(hours=1)) == 2
        db.session.commit()
    stale, unbeaten, live, done = batches(app)
    assert stale.status == unbeaten.status == "failed" and stale.finished_at is not None
    assert "heartbeat" in stale.errors[0]["message"]
    assert live.status == "running" and done.status == "accepted"


@pytest.mark.parametrize("url", ["postgresql://postgres@127.0.0.1:1/none", "sqlite:////nonexistent-dir/pilot.db"])
def test_an_unreachable_database_answers_503_in_the_error_shape(tmp_path, url):
    app = create_app({"TESTING": True, "DATABASE_URL": url, "AUTO_MIGRATE": False, "SECRET_KEY": "x"})
    r = app.test_client().get("/api/v1/stores", headers={"Authorization": "Bearer whatever"})
    with app.app_context():
        db.engine.dispose()
    assert r.status_code == 503, r.data[:300]
    error = r.json["error"]
    assert error["code"] == "database_unavailable" and error["status"] == 503
    assert "127.0.0.1" not in r.text and "sqlite" not in r.text.lower() and "nonexistent" not in r.text


def _backends(engine, name: str, where: str = "") -> list[int]:
    with engine.connect() as conn:
        return list(conn.scalars(text(f"SELECT pid FROM pg_stat_activity WHERE application_name = :name {where}"),
                                 {"name": name}))


def test_database_killed_during_copy_answers_503_and_the_batch_ends_failed(app, backend, live_server, auth):
    if backend[0] != "postgresql":
        pytest.skip("kills PostgreSQL backends (set PILOT_TEST_DATABASE_URL)")
    name = f"pilot-live-{uuid.uuid4().hex[:8]}"  # the worker's backends, and no one else's
    server = live_server(env={"PGAPPNAME": name})
    watcher = make_engine(app.config["DATABASE_URL"])
    body = as_csv([row(i) for i in range(30_000)])
    first = line_end_before(body, len(body) // 3)  # 10,000 rows: two COPY chunks

    def pieces():
        yield body[:first]
        deadline = time.monotonic() + 30
        while not _backends(watcher, name, "AND query LIKE 'COPY%'") and time.monotonic() < deadline:
            time.sleep(0.05)
        with watcher.connect() as conn:
            killed = conn.scalars(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                       "WHERE application_name = :name"), {"name": name}).all()
        assert killed and all(killed)
        yield body[first:]

    head = request_head("POST", UPLOAD, {**auth("feed"), "Content-Type": "text/csv"}, length=len(body))
    try:
        answer = server.exchange(head, pieces())
    finally:
        watcher.dispose()
    assert answer.status == 503, answer.raw[:500]
    error = answer.json()["error"]
    assert error["code"] == "database_unavailable" and "terminat" not in json.dumps(error)
    assert_failed_batch(app, "database")


# -- 3. a gzip bomb is refused while streaming, the worker's memory flat ---------------------------

def gzip_bomb(header: str, megabytes: int, line: bytes = b"a" * 2**20) -> bytes:
    """A gzip of the header and `megabytes` MiB made of `line` (no newline in the default one)."""
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [z.compress(header.encode() + b"\n")]
    parts += [z.compress(line) for _ in range(megabytes * 2**20 // len(line))]
    return b"".join(parts) + z.flush()


def test_gzip_bomb_is_refused_while_streaming_with_the_worker_memory_flat(app, live_server, auth):
    server = live_server()
    bomb = gzip_bomb(",".join(ingestion.FIELDS), 512)  # 512 MiB of one character, no newline
    assert len(bomb) < 2**20
    head = request_head("POST", UPLOAD, {**auth("feed"), "Content-Type": "text/csv", "Content-Encoding": "gzip"},
                        length=len(bomb))
    answer = server.exchange(head, [bomb])
    assert server.peak_rss_mb() <= 300
    assert answer.status == 413, answer.raw[:500]
    error = answer.json()["error"]
    assert "PILOT_MAX_LINE_BYTES" in error["message"] and error["details"]["limit_bytes"] == 2**20
    assert count(app) == 0


def test_decompressed_size_is_bounded(app, client, auth):
    app.config["MAX_DECOMPRESSED_BYTES"] = 5 * 2**20
    line = b"e1,c1,T001,2026-10-05T10:00:00+00:00,1\n" * 1000  # short rows, each one valid
    bomb = gzip_bomb("event_id,customer,store,occurred_at,amount", 20, line)
    r = client.post(UPLOAD, data=bomb, headers={**auth("feed"), "Content-Type": "text/csv", "Content-Encoding": "gzip"})
    assert r.status_code == 413, r.json
    assert "PILOT_MAX_DECOMPRESSED_BYTES" in r.json["error"]["message"]
    assert r.json["error"]["details"]["limit_bytes"] == 5 * 2**20
    assert count(app) == 0 and batches(app)[0].status == "failed"


def test_line_and_field_lengths_are_bounded(app, client, auth):
    app.config["MAX_LINE_BYTES"] = 4096
    h = {**auth("feed"), "Content-Type": "text/csv"}
    long_line = b"event_id,customer,store,occurred_at,amount\ne1,c1,T001,2026-10-05T10:00:00+00:00,1\n" + b"x" * 5000
    r = client.post(UPLOAD, data=long_line, headers=h)
    assert r.status_code == 413 and "PILOT_MAX_LINE_BYTES" in r.json["error"]["message"], r.json
    assert r.json["error"]["details"] == {"limit_bytes": 4096, "line": 3}
    # a quoted field may run over many lines, each within the limit: the field itself is bounded
    many = b"event_id,customer,store,occurred_at,amount\n\"" + b"y" * 100 + (b"\n" + b"y" * 100) * 3000 + b"\",c,T001,x,1\n"
    r = client.post(UPLOAD, data=many, headers=h)
    assert r.status_code == 422 and "field" in r.json["error"]["message"], r.json
    assert r.json["error"]["details"]["limit_field_chars"] > 0
    assert count(app) == 0


# -- 4. an upload longer than the worker timeout completes -------------------------------------------

def test_an_upload_slower_than_the_worker_timeout_succeeds(app, live_server, auth):
    server = live_server(args=["--timeout", "3"])
    body = as_csv([row(i) for i in range(6000)])
    step = len(body) // 12 + 1
    head = request_head("POST", UPLOAD, {**auth("feed"), "Content-Type": "text/csv"}, length=len(body))
    started = time.monotonic()
    answer = server.exchange(head, [body[i:i + step] for i in range(0, len(body), step)], pause=0.5)
    assert answer.status == 200, (answer.raw[:500], server.log()[-2000:])
    assert time.monotonic() - started > 5
    assert answer.json()["accepted"] == 6000 and count(app) == 6000
    assert "WORKER TIMEOUT" not in server.log()


def test_serve_script_runs_the_gunicorn_config_with_threaded_workers():
    script = (ROOT / "scripts" / "serve.sh").read_text()
    assert "-c python:pilot.server" in script and "pilot demo" in script
    assert script.index("pilot demo") < script.index(".venv/bin/gunicorn")
    from pilot import server
    assert server.worker_class == "gthread" and server.threads >= 2


# -- 5. the CSV header is bounded and checked in linear time ----------------------------------------

@pytest.mark.parametrize("columns,status,limit", [(30_000, 422, "PILOT_MAX_CSV_COLUMNS"),
                                                  (200_000, 413, "PILOT_MAX_LINE_BYTES")])
def test_a_huge_csv_header_is_refused_quickly(app, client, auth, columns, status, limit):
    header = ",".join(f"c{i}" for i in range(columns)).encode() + b"\n"
    started = time.perf_counter()
    r = client.post(UPLOAD, data=header, headers={**auth("feed"), "Content-Type": "text/csv"})
    assert time.perf_counter() - started < 2
    assert r.status_code == status and limit in r.json["error"]["message"], r.json


def test_a_header_within_the_limit_is_checked_in_linear_time(app, client, auth):
    """1,000 columns, every name given twice: the check reports the repeats without a quadratic scan."""
    names = [f"c{i}" for i in range(500)] * 2
    started = time.perf_counter()
    r = client.post("/api/v1/customers/import", data=("external_id," + ",".join(names[:-1]) + "\n").encode(),
                    headers={**auth("manager"), "Content-Type": "text/csv"})
    assert time.perf_counter() - started < 1
    assert r.status_code == 422 and len(r.json["error"]["details"]["columns"]["repeated"]) == 499


# -- 8. a time that overflows is a row error -----------------------------------------------------------

@pytest.mark.parametrize("moment", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"])
def test_an_overflowing_time_is_a_row_error(app, client, auth, moment):
    rows = [row(1), row(2, occurred_at=moment), row(3)]
    for r in (client.post("/api/v1/transactions", json={"transactions": as_json(rows)}, headers=auth("feed")),
              client.post(UPLOAD, data=as_csv(rows), headers={**auth("feed"), "Content-Type": "text/csv"})):
        assert r.status_code == 422, r.json
        assert r.json["error"]["details"]["rows"] == [
            {"row": 2, "field": "occurred_at", "message": "Out of range (after conversion to UTC)."}]
    assert count(app) == 0


@pytest.mark.parametrize("path,body", [
    ("/api/v1/customers", '{"customers": [{"external_id": "a"}, {"external_id": "b", "attributes": {"x": NaN}}]}'),
    ("/api/v1/customers", '{"customers": [{"external_id": "a"}, {"external_id": "b", "attributes": {"x": [1e999]}}]}'),
    ("/api/v1/stores/import", ('{"stores": [{"code": "S1", "name": "n", "region": "r1"}, '
                               '{"code": "S2", "name": "n", "region": "r1", "attributes": {"a": {"b": -Infinity}}}]}')),
])
def test_a_number_json_cannot_hold_is_a_row_error(app, client, auth, path, body):
    r = client.post(path, data=body, headers={**auth("manager"), "Content-Type": "application/json"})
    assert r.status_code == 422, r.json
    [error] = r.json["error"]["details"]["rows"]
    assert error["row"] == 2 and error["field"].startswith("attributes")
    assert count(app, Customer) == 0 and count(app, Store) == 2


def test_lines_end_as_universal_newlines_end_them(app, client, auth, monkeypatch):
    """Bounding lines keeps what reading through io did: \\r\\n, \\n and a lone \\r (old spreadsheet
    exports) all end a line, also where a read ends between \\r and \\n."""
    monkeypatch.setattr(batches_module, "READ_SIZE", 7)
    rows = [row(i) for i in range(30)]
    for newline in ("\r", "\r\n"):
        body = as_csv(rows, newline=newline, bom=True)
        r = client.post(UPLOAD, data=body, headers={**auth("feed"), "Content-Type": "text/csv"},
                        query_string={"source": f"s{len(newline)}"})
        assert r.status_code == 200 and r.json["accepted"] == 30, r.json
