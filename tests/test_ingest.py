"""Transactions in: JSON batches, streamed CSV and the CLI share one validation and write path."""
from __future__ import annotations

import gzip
import json
import multiprocessing as mp
import socket
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from werkzeug.serving import make_server

from pilot.cli import cli
from pilot.db import db
from pilot.models import Customer, IngestionBatch, Transaction
from tests.factories import HEADER, as_csv, as_json, count, row


def post_json(client, headers, rows, **query):
    return client.post("/api/v1/transactions", json={"transactions": as_json(rows)}, headers=headers,
                       query_string=query)


def upload(client, headers, body: bytes, **query):
    return client.post("/api/v1/transactions/upload", data=body, headers={**headers, "Content-Type": "text/csv"},
                       query_string=query)


def stored(app) -> list[tuple]:
    """Every stored transaction as plain values, in event order."""
    with app.app_context():
        q = select(Transaction.event_id, Customer.external_id, Transaction.store_id, Transaction.occurred_at,
                   Transaction.type, Transaction.amount, Transaction.items, Transaction.discount_cost,
                   Transaction.points_issued, Transaction.channel).join(Customer, Customer.id == Transaction.customer_id)
        return sorted((e, c, s, t.isoformat(), ty, round(a, 4), i, None if d is None else round(d, 4), p, ch)
                      for e, c, s, t, ty, a, i, d, p, ch in db.session.execute(q))


def expected(rows: list[dict]) -> list[tuple]:
    """What the rows should become: UTC times, numbers, defaults."""
    out = []
    for r in rows:
        t = datetime.fromisoformat(r["occurred_at"]).astimezone(UTC)
        out.append((r["event_id"], r["customer"], 1 if r["store"] == "T001" else 2, t.isoformat(), r["type"],
                    round(float(r["amount"]), 4), int(r["items"]),
                    None if r["discount_cost"] == "" else round(float(r["discount_cost"]), 4),
                    int(r["points_issued"]), r["channel"]))
    return sorted(out)


def test_json_batch_is_stored_in_utc_and_replay_adds_nothing(app, client, auth):
    rows = [row(i) for i in range(300)]
    started = time.perf_counter()
    r = post_json(client, auth("feed"), rows)
    wall = time.perf_counter() - started
    assert r.status_code == 200, r.json
    # where the time went: staging, then the set-based write; together within the request's wall time
    assert set(r.json["timings"]) == {"stage_seconds", "write_seconds"}
    assert min(r.json["timings"].values()) > 0 and sum(r.json["timings"].values()) <= wall
    assert {k: r.json[k] for k in ("rows", "accepted", "duplicates", "conflicts", "rejected")} == \
        {"rows": 300, "accepted": 300, "duplicates": 0, "conflicts": 0, "rejected": 0}
    assert r.json["customers_created"] == 97
    assert stored(app) == expected(rows)
    again = post_json(client, auth("admin"), rows)
    assert (again.json["accepted"], again.json["duplicates"]) == (0, 300)
    assert count(app) == 300
    listed = client.get("/api/v1/transactions", query_string={"customer": "cust5", "limit": 2},
                        headers=auth("analyst")).json
    assert [t["customer"] for t in listed["items"]] == ["cust5", "cust5"] and listed["next_cursor"]


def test_same_event_with_other_content_is_a_conflict_and_not_applied(app, client, auth):
    rows = [row(i) for i in range(20)]
    post_json(client, auth("feed"), rows)
    changed = [row(i, amount="999.00") if i in (3, 11) else row(i) for i in range(25)]
    r = post_json(client, auth("feed"), changed)
    assert (r.json["accepted"], r.json["duplicates"], r.json["conflicts"]) == (5, 18, 2)
    assert [c["row"] for c in r.json["conflict_rows"]] == [4, 12]
    assert stored(app) == expected(rows + [row(i) for i in range(20, 25)])
    # another source is another namespace of event ids
    other = post_json(client, auth("feed"), rows[:3], source="webshop")
    assert other.json["accepted"] == 3


def test_repeats_inside_one_batch(app, client, auth):
    rows = [row(1), row(2), row(1), row(2, amount="5.00")]
    r = post_json(client, auth("feed"), rows)
    assert (r.json["accepted"], r.json["duplicates"], r.json["conflicts"]) == (2, 1, 1)
    assert stored(app) == expected([row(1), row(2)])


def test_a_bad_row_in_the_middle_of_100000_stores_nothing(app, client, auth):
    post_json(client, auth("feed"), [row(i) for i in range(10)])
    rows = [row(i) for i in range(100_000)]
    rows[50_000] = row(50_000, amount="12,5")
    rows[77_777] = row(77_777, store="NOPE")
    r = upload(client, auth("feed"), as_csv(rows))
    assert r.status_code == 422, r.json
    details = r.json["error"]["details"]
    assert [(e["row"], e["field"]) for e in details["rows"]] == [(50_001, "amount"), (77_778, "store")]
    assert "Unknown store 'NOPE'" in details["rows"][1]["message"]
    assert count(app) == 10
    with app.app_context():
        batch = db.session.get(IngestionBatch, details["batch_id"])
        assert (batch.status, batch.rows, batch.rejected, batch.accepted) == ("rejected", 100_000, 2, 0)
        assert db.session.scalar(select(func.count()).select_from(Customer)) == 10  # none created


def test_every_bad_row_is_reported_with_field_and_reason(client, auth):
    future = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    bad = [row(0, event_id=""), row(1, amount="abc"), row(2, occurred_at=future),
           row(3, occurred_at="2026-10-05T09:30:00"), row(4, type="gift"), row(5, amount="-3.00"),
           row(6, items="2.5"), row(7, channel="fax"), row(8, event_id="x" * 129), row(9, amount="1.23456"),
           row(10, occurred_at="yesterday"), row(11, customer=""), row(12, customer="c\x00x")]
    r = post_json(client, auth("feed"), [row(100), *bad])
    assert r.status_code == 422
    got = {(e["row"], e["field"]) for e in r.json["error"]["details"]["rows"]}
    assert got == {(2, "event_id"), (3, "amount"), (4, "occurred_at"), (5, "occurred_at"), (6, "type"),
                   (7, "amount"), (8, "items"), (9, "channel"), (10, "event_id"), (11, "amount"),
                   (12, "occurred_at"), (13, "customer"), (14, "customer")}
    messages = {e["row"]: e["message"] for e in r.json["error"]["details"]["rows"]}
    assert messages[2] == "Missing value." and "Not a number" in messages[3]
    assert "future" in messages[4] and "offset" in messages[5] and "refund" in messages[7]
    assert "129" in messages[10] and "4 decimal" in messages[11] and "NUL" in messages[14]


def test_skip_rows_stores_the_good_rows_and_reports_the_bad(app, client, auth):
    rows = [row(i) for i in range(10)]
    rows[4] = row(4, store="NOPE")
    r = post_json(client, auth("feed"), rows, on_error="skip_rows")
    assert r.status_code == 200
    assert (r.json["accepted"], r.json["rejected"]) == (9, 1)
    assert r.json["errors"] == [{"row": 5, "field": "store", "message": "Unknown store 'NOPE'."}]
    assert count(app) == 9


def test_unknown_customers_can_be_refused(app, client, auth):
    r = post_json(client, auth("feed"), [row(1)], create_customers="false")
    assert r.status_code == 422 and r.json["error"]["details"]["rows"][0]["field"] == "customer"
    assert count(app) == 0 and count(app, Customer) == 0


def test_csv_forms_bom_crlf_quotes_and_gzip(app, client, auth):
    rows = [row(i) for i in range(40)]
    rows[3] = row(3, event_id='"quoted, with comma"')
    body = as_csv(rows, newline="\r\n", bom=True)
    assert body.startswith(b"\xef\xbb\xbf") and b'"""quoted, with comma"""\r\n' not in body  # quoted mid-row
    assert b'"""quoted, with comma""",' in body and b"\r\n" in body
    r = upload(client, auth("feed"), body)
    assert r.status_code == 200, r.json
    assert r.json["accepted"] == 40
    with app.app_context():
        assert db.session.scalar(select(func.count()).where(Transaction.event_id == '"quoted, with comma"')) == 1
    more = [row(i) for i in range(40, 60)]
    zipped = client.post("/api/v1/transactions/upload", data=gzip.compress(as_csv(more)),
                         headers={**auth("feed"), "Content-Type": "text/csv", "Content-Encoding": "gzip"})
    assert zipped.json["accepted"] == 20
    js = client.post("/api/v1/transactions", data=gzip.compress(json.dumps({"transactions": as_json(
        [row(i) for i in range(60, 70)])}).encode()), headers={**auth("feed"), "Content-Type": "application/json",
                                                                  "Content-Encoding": "gzip"})
    assert js.json["accepted"] == 10
    assert count(app) == 70


@pytest.mark.parametrize("body,ctype,status,fragment", [
    (b"", "text/csv", 422, "empty"),
    (HEADER.encode() + b",colour\n", "text/csv", 422, "unknown column(s) colour"),
    (b"event_id,customer\n", "text/csv", 422, "missing column(s)"),
    (b"event_id,customer,store,occurred_at,amount\ne1,c1,T001,2026-10-05T10:00:00+00:00,1,extra\n", "text/csv",
     422, "1 row error"),
    (b"\xff\xfe\x00bad", "text/csv", 422, "UTF-8"),
    (b"event_id,customer", "application/json", 415, "text/csv"),
])
def test_csv_refusals(app, client, auth, body, ctype, status, fragment):
    r = client.post("/api/v1/transactions/upload", data=body, headers={**auth("feed"), "Content-Type": ctype})
    assert r.status_code == status, r.json
    assert fragment in r.json["error"]["message"]
    assert count(app) == 0


def test_json_refusals(client, auth, app):
    h = auth("feed")
    assert client.post("/api/v1/transactions", data="x", headers={**h, "Content-Type": "text/plain"}).status_code == 415
    assert client.post("/api/v1/transactions", data="{", headers={**h, "Content-Type": "application/json"}) \
        .json["error"]["code"] == "malformed_json"
    assert client.post("/api/v1/transactions", json={"rows": []}, headers=h).status_code == 422
    bad_zip = client.post("/api/v1/transactions", data=b"not gzip", headers={
        **h, "Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert bad_zip.status_code == 400 and "gzip" in bad_zip.json["error"]["message"]
    app.config["BATCH_ROW_LIMIT"] = 5
    too_many = post_json(client, h, [row(i) for i in range(6)])
    assert too_many.status_code == 413 and too_many.json["error"]["details"]["limit_rows"] == 5
    assert post_json(client, auth("manager"), [row(1)]).status_code == 403
    assert post_json(client, auth("store"), [row(1)]).status_code == 403
    assert count(app) == 0


def test_very_long_fields_are_row_errors(client, auth, app):
    body = as_csv([row(1, customer="c" * 100_000), row(2)])
    r = upload(client, auth("feed"), body)
    assert r.status_code == 422
    assert r.json["error"]["details"]["rows"][0]["field"] == "customer"
    assert count(app) == 0


def test_cli_ingest_same_path(app, tmp_path, auth, client):
    path = tmp_path / "tx.csv.gz"
    path.write_bytes(gzip.compress(as_csv([row(i) for i in range(30)])))
    out = app.test_cli_runner().invoke(cli, ["ingest", str(path), "--source", "pos"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["accepted"] == 30
    bad = tmp_path / "bad.csv"
    bad.write_bytes(as_csv([row(100), row(101, amount="x")]))
    out = app.test_cli_runner().invoke(cli, ["ingest", str(bad)])
    assert out.exit_code == 1 and '"row": 2' in out.output
    assert count(app) == 30
    batches = client.get("/api/v1/ingestion-batches", headers=auth("analyst")).json["items"]
    assert [(b["method"], b["status"], b["accepted"]) for b in batches] == [("cli", "accepted", 30),
                                                                             ("cli", "rejected", 0)]


def test_data_quality_counts_days_stores_late_events_and_batches(app, client, auth):
    now = datetime.now(UTC).replace(microsecond=0)
    rows = [row(i, occurred_at=(now - timedelta(days=i % 5, hours=1)).isoformat(), store="T001" if i < 12 else "T002")
            for i in range(20)]
    post_json(client, auth("feed"), rows)
    post_json(client, auth("feed"), [row(500, store="NOPE")])
    r = client.get("/api/v1/data-quality", headers=auth("analyst"))
    assert r.status_code == 200, r.json
    q = r.json
    by_day: dict[str, int] = {}
    for x in rows:
        d = (datetime.fromisoformat(x["occurred_at"]).astimezone(UTC)).date().isoformat()
        by_day[d] = by_day.get(d, 0) + 1
    assert {d["date"]: d["rows"] for d in q["per_day"]} == by_day
    late = sum(1 for i in range(20) if i % 5 >= 1)  # received now, happened a day or more ago
    assert q["late"] == late and q["rows"] == 20
    stores = {s["store"]: s for s in q["per_store"]}
    assert (stores["T001"]["rows"], stores["T002"]["rows"]) == (12, 8)
    assert stores["T001"]["last_event_at"].startswith((now - timedelta(hours=1)).date().isoformat())
    assert q["rejected_rows"] == 1 and q["failed_batches"] == 1
    assert [b["status"] for b in q["batches"]] == ["rejected", "accepted"]
    one = client.get("/api/v1/data-quality", query_string={"store": "T002", "late_hours": 200},
                     headers=auth("feed")).json
    assert [s["store"] for s in one["per_store"]] == ["T002"] and one["rows"] == 8 and one["late"] == 0
    assert client.get("/api/v1/data-quality", query_string={"from": "2026-02-01", "to": "2026-01-01"},
                      headers=auth("analyst")).status_code == 422


# -- concurrency and interrupted uploads ---------------------------------------------------------

def _ingester(url, secret, start, stop, barrier, out):
    from pilot import create_app
    client = create_app({"DATABASE_URL": url, "AUTO_MIGRATE": False, "TESTING": True}).test_client()
    barrier.wait()
    totals = {"accepted": 0, "duplicates": 0}
    for lo in range(start, stop, 500):
        r = client.post("/api/v1/transactions", json={"transactions": as_json([row(i) for i in range(lo, lo + 500)])},
                        headers={"Authorization": f"Bearer {secret}"})
        assert r.status_code == 200, r.json
        totals["accepted"] += r.json["accepted"]
        totals["duplicates"] += r.json["duplicates"]
    out.put(totals)


def test_overlapping_batches_from_several_processes(app, backend, tokens):
    if backend[0] != "postgresql":
        pytest.skip("races are checked against PostgreSQL (set PILOT_TEST_DATABASE_URL)")
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(4), ctx.Queue()
    spans = [(0, 3000), (1000, 4000), (0, 4000), (2000, 5000)]
    procs = [ctx.Process(target=_ingester, args=(app.config["DATABASE_URL"], tokens["feed"], a, b, barrier, out))
             for a, b in spans]
    for p in procs:
        p.start()
    results = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert count(app) == 5000
    assert sum(r["accepted"] for r in results) == 5000
    assert sum(r["accepted"] + r["duplicates"] for r in results) == sum(b - a for a, b in spans)
    assert count(app, Customer) == 97
    assert len(stored(app)) == 5000 and stored(app) == expected([row(i) for i in range(5000)])


def test_client_disconnecting_mid_upload_leaves_nothing(app, tokens):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        body = as_csv([row(i) for i in range(20_000)])
        head = (f"POST /api/v1/transactions/upload HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
                f"Authorization: Bearer {tokens['feed']}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", server.server_port)) as sock:
            sock.sendall(head + body[: len(body) // 2])
        deadline = time.time() + 20
        while time.time() < deadline:
            with app.app_context():
                batch = db.session.scalar(select(IngestionBatch))
                if batch is not None and batch.status != "running":
                    break
            time.sleep(0.1)
    finally:
        server.shutdown()
    assert batch is not None and batch.status == "failed", batch and batch.status
    assert count(app) == 0 and count(app, Customer) == 0


def test_same_file_same_rows_on_every_backend(app, client, auth):
    """What is stored is what was sent, field by field (runs on SQLite and PostgreSQL alike)."""
    rows = [row(i) for i in range(2000)]
    assert upload(client, auth("feed"), as_csv(rows)).json["accepted"] == 2000
    assert stored(app) == expected(rows)


def test_a_store_with_transactions_cannot_be_deleted(app, client, auth):
    post_json(client, auth("feed"), [row(1, store="T002")])
    r = client.delete("/api/v1/stores/T002", headers=auth("manager"))
    assert r.status_code == 409 and "transactions" in r.json["error"]["message"]
    assert count(app) == 1
