"""Customer events in: the transactions' one validation and write path (JSON batches, streamed CSV, CLI)."""
from __future__ import annotations

import csv
import gzip
import io
import json
from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy import select

from pilot.cli import cli
from pilot.db import db
from pilot.models import Customer, CustomerEvent, IngestionBatch
from tests.factories import count

BASE = datetime(2026, 10, 5, 9, 30, tzinfo=timezone(timedelta(hours=2)))
TYPES = ("survey_nps", "app_session", "referral", "complaint_opened")
CSV_HEADER = ("event_id", "customer", "occurred_at", "type", "value", "store", "attr.channel", "attr.campaign")


def event(i: int, **over) -> dict:
    """A valid event: every fourth an NPS answer (value 0-10), some with a store and attributes."""
    kind = TYPES[i % 4]
    e = {"event_id": f"ev{i}", "customer": f"cust{i % 53}", "occurred_at": (BASE + timedelta(seconds=37 * i)).isoformat(),
         "type": kind, "value": str(i % 11) if kind == "survey_nps" else "",
         "store": "T001" if i % 3 == 0 else "T002" if i % 3 == 1 else "",
         "attributes": {"channel": "app" if i % 2 else "email", **({"campaign": f"c{i % 5}"} if i % 5 else {})}}
    e.update(over)
    return e


def as_json(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if v != ""} for r in rows]


def as_csv(rows: list[dict], header=CSV_HEADER) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for r in rows:
        attrs = r.get("attributes", {})
        writer.writerow([attrs.get(h[5:], "") if h.startswith("attr.") else r.get(h, "") for h in header])
    return buffer.getvalue().encode()


def post_json(client, headers, rows, **query):
    return client.post("/api/v1/events", json={"events": as_json(rows)}, headers=headers, query_string=query)


def upload(client, headers, body: bytes, **query):
    return client.post("/api/v1/events/upload", data=body, headers={**headers, "Content-Type": "text/csv"},
                       query_string=query)


def stored(app) -> list[tuple]:
    with app.app_context():
        q = select(CustomerEvent.event_id, Customer.external_id, CustomerEvent.store_id, CustomerEvent.occurred_at,
                   CustomerEvent.type, CustomerEvent.value, CustomerEvent.attributes) \
            .join(Customer, Customer.id == CustomerEvent.customer_id)
        return sorted((e, c, s, t.isoformat(), ty, v, json.dumps(a, sort_keys=True))
                      for e, c, s, t, ty, v, a in db.session.execute(q))


def expected(rows: list[dict]) -> list[tuple]:
    return sorted((r["event_id"], r["customer"], {"T001": 1, "T002": 2}.get(r["store"]),
                   datetime.fromisoformat(r["occurred_at"]).astimezone(UTC).isoformat(), r["type"],
                   float(r["value"]) if r["value"] != "" else None,
                   json.dumps({k: str(v) for k, v in r["attributes"].items()}, sort_keys=True)) for r in rows)


def test_json_batch_is_stored_in_utc_and_a_replay_adds_nothing(app, client, auth):
    rows = [event(i) for i in range(200)]
    r = post_json(client, auth("feed"), rows)
    assert r.status_code == 200, r.json
    assert {k: r.json[k] for k in ("rows", "accepted", "duplicates", "conflicts", "rejected", "customers_created")} \
        == {"rows": 200, "accepted": 200, "duplicates": 0, "conflicts": 0, "rejected": 0, "customers_created": 53}
    assert stored(app) == expected(rows)
    again = post_json(client, auth("admin"), rows)
    assert (again.json["accepted"], again.json["duplicates"], again.json["conflicts"]) == (0, 200, 0)
    assert count(app, CustomerEvent) == 200
    with app.app_context():
        batches = db.session.scalars(select(IngestionBatch).order_by(IngestionBatch.id)).all()
        assert [(b.kind, b.status, b.accepted) for b in batches] == [("events", "accepted", 200),
                                                                     ("events", "accepted", 0)]
    listed = client.get("/api/v1/events", query_string={"customer": "cust4", "type": "survey_nps"},
                        headers=auth("analyst")).json["items"]
    want = [e for e in rows if e["customer"] == "cust4" and e["type"] == "survey_nps"]
    assert [(e["event_id"], e["value"], e["attributes"]) for e in listed] == \
        [(e["event_id"], float(e["value"]), e["attributes"]) for e in want] and want


def test_typed_attributes_are_kept_as_text_and_numbers_as_sent(app, client, auth):
    r = post_json(client, auth("feed"), [event(1, value=9, attributes={"score": 5, "vip": True, "ratio": 0.25,
                                                                       "empty": None})])
    assert r.status_code == 200, r.json
    listed = client.get("/api/v1/events", headers=auth("analyst")).json["items"]
    assert listed[0]["attributes"] == {"score": "5", "vip": "true", "ratio": "0.25"} and listed[0]["value"] == 9.0


def test_same_event_with_other_content_is_a_conflict_and_not_applied(app, client, auth):
    rows = [event(i) for i in range(20)]
    post_json(client, auth("feed"), rows)
    changed = [event(3, value="1"), event(5, attributes={"channel": "sms"}), *[event(i) for i in range(6, 25)]]
    r = post_json(client, auth("feed"), changed)
    assert (r.json["accepted"], r.json["duplicates"], r.json["conflicts"]) == (5, 14, 2), r.json
    assert [c["row"] for c in r.json["conflict_rows"]] == [1, 2]
    assert stored(app) == expected(rows + [event(i) for i in range(20, 25)])
    assert post_json(client, auth("feed"), rows[:3], source="survey_tool").json["accepted"] == 3


def test_every_bad_row_is_named_with_field_and_reason(app, client, auth):
    future = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    bad = [event(0, event_id=""), event(1, type=""), event(2, value="abc"), event(3, value="1e13"),
           event(4, occurred_at="2026-10-05T09:30:00"), event(5, occurred_at=future), event(6, store="NOPE"),
           event(7, attributes=["a"]), event(8, attributes={"nested": {"x": 1}}), event(9, attributes={"bad name": 1}),
           event(10, colour="red"), event(11, customer="c\x00x"), event(12, type="t" * 65),
           event(13, attributes={"long": "x" * 501})]
    r = post_json(client, auth("feed"), [event(100), *bad])
    assert r.status_code == 422, r.json
    got = [(e["row"], e["field"]) for e in r.json["error"]["details"]["rows"]]
    assert got == [(2, "event_id"), (3, "type"), (4, "value"), (5, "value"), (6, "occurred_at"), (7, "occurred_at"),
                   (8, "store"), (9, "attributes"), (10, "attributes.nested"), (11, "attributes"), (12, "colour"),
                   (13, "customer"), (14, "type"), (15, "attributes.long")]
    messages = {e["row"]: e["message"] for e in r.json["error"]["details"]["rows"]}
    assert "Not a number" in messages[4] and "offset" in messages[6] and "Unknown store 'NOPE'" in messages[8]
    assert "NUL" in messages[13] and messages[12] == "Unknown field."
    assert count(app, CustomerEvent) == 0 and count(app, Customer) == 0
    with app.app_context():
        batch = db.session.get(IngestionBatch, r.json["error"]["details"]["batch_id"])
        assert (batch.kind, batch.status, batch.rows, batch.rejected) == ("events", "rejected", 15, 14)


def test_skip_rows_and_unknown_customers(app, client, auth):
    rows = [event(i) for i in range(10)]
    rows[4] = event(4, value="x")
    r = post_json(client, auth("feed"), rows, on_error="skip_rows")
    assert (r.json["accepted"], r.json["rejected"]) == (9, 1)
    assert r.json["errors"] == [{"row": 5, "field": "value", "message": "Not a number: 'x'."}]
    refused = post_json(client, auth("feed"), [event(50, customer="stranger")], create_customers="false")
    assert refused.status_code == 422 and refused.json["error"]["details"]["rows"][0]["field"] == "customer"
    assert count(app, CustomerEvent) == 9


def test_csv_with_attribute_columns_and_gzip_and_a_bad_row_in_50000(app, client, auth):
    rows = [event(i) for i in range(50_000)]
    rows[31_337] = event(31_337, occurred_at="soon")
    r = upload(client, auth("feed"), as_csv(rows))
    assert r.status_code == 422
    assert [(e["row"], e["field"]) for e in r.json["error"]["details"]["rows"]] == [(31_338, "occurred_at")]
    assert count(app, CustomerEvent) == 0
    rows[31_337] = event(31_337)
    zipped = client.post("/api/v1/events/upload", data=gzip.compress(as_csv(rows[:3000])),
                         headers={**auth("feed"), "Content-Type": "text/csv", "Content-Encoding": "gzip"})
    assert zipped.status_code == 200 and zipped.json["accepted"] == 3000, zipped.json
    # in a CSV, attributes are attr.<name> columns and an empty cell is no attribute
    assert stored(app) == expected(rows[:3000])
    for header, fragment in ((CSV_HEADER + ("colour",), "unknown column(s) colour"),
                             (CSV_HEADER + ("attributes",), "unknown column(s) attributes"),
                             (("event_id", "customer", "type"), "missing column(s) occurred_at")):
        refused = upload(client, auth("feed"), as_csv(rows[:2], header))
        assert refused.status_code == 422 and fragment in refused.json["error"]["message"], refused.json


def test_roles_are_the_transactions_roles(client, auth):
    assert post_json(client, auth("manager"), [event(1)]).status_code == 403
    assert post_json(client, auth("store"), [event(1)]).status_code == 403
    assert upload(client, auth("analyst"), as_csv([event(1)])).status_code == 403
    assert client.get("/api/v1/events", headers=auth("feed")).status_code == 403
    assert client.get("/api/v1/events", headers=auth("analyst")).status_code == 200


def test_json_refusals_and_limits(app, client, auth):
    h = auth("feed")
    assert client.post("/api/v1/events", data="x", headers={**h, "Content-Type": "text/plain"}).status_code == 415
    assert client.post("/api/v1/events", json={"transactions": []}, headers=h).status_code == 422
    app.config["BATCH_ROW_LIMIT"] = 5
    too_many = post_json(client, h, [event(i) for i in range(6)])
    assert too_many.status_code == 413 and "/api/v1/events/upload" in too_many.json["error"]["message"]
    assert count(app, CustomerEvent) == 0


def test_cli_ingest_events_same_path(app, tmp_path, client, auth):
    path = tmp_path / "events.csv.gz"
    path.write_bytes(gzip.compress(as_csv([event(i) for i in range(30)])))
    out = app.test_cli_runner().invoke(cli, ["ingest-events", str(path), "--source", "app"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["accepted"] == 30
    bad = tmp_path / "bad.csv"
    bad.write_bytes(as_csv([event(100), event(101, value="x")]))
    out = app.test_cli_runner().invoke(cli, ["ingest-events", str(bad)])
    assert out.exit_code == 1 and '"row": 2' in out.output
    assert count(app, CustomerEvent) == 30
    batches = client.get("/api/v1/ingestion-batches", headers=auth("analyst")).json["items"]
    assert [(b["method"], b["status"], b["accepted"]) for b in batches] == [("cli", "accepted", 30),
                                                                             ("cli", "rejected", 0)]


def test_a_failed_events_batch_is_missing_until_its_events_arrive(app, client, auth):
    from pilot.data_quality import missing_batches
    rows = [event(i, store="T001") for i in range(10)]
    post_json(client, auth("feed"), [*rows[:9], event(9, store="T001", value="x")])
    window = (BASE - timedelta(days=30), datetime.now(UTC) + timedelta(days=1))
    with app.app_context():
        [missing] = missing_batches(db.session, 0, [1], *window, since=window[0])
        assert missing["status"] == "rejected"
    post_json(client, auth("feed"), rows)
    with app.app_context():
        assert missing_batches(db.session, 0, [1], *window, since=window[0]) == []


def test_an_events_upload_cut_short_stores_nothing_on_a_real_gunicorn(app, live_server, auth):
    """Cut after a newline (half the Content-Length sent) and before the last chunk: nothing stored, the
    batch failed with the reason; the same file sent whole is stored."""
    from tests.live import chunked, request_head
    server = live_server()
    headers = {**auth("feed"), "Content-Type": "text/csv"}
    body = as_csv([event(i) for i in range(4000)])
    at = body.rindex(b"\n", 0, len(body) // 2) + 1
    for answer in (server.exchange(request_head("POST", "/api/v1/events/upload", headers, length=len(body)),
                                   [body[:at]]),
                   server.exchange(request_head("POST", "/api/v1/events/upload", headers),
                                   chunked([body[:at // 2], body[at // 2:at]], last=False))):
        assert answer.status == 400 and answer.json()["error"]["code"] == "incomplete_body", answer.raw[:300]
    with app.app_context():
        batches = db.session.scalars(select(IngestionBatch).order_by(IngestionBatch.id)).all()
        assert [(b.kind, b.status) for b in batches] == [("events", "failed")] * 2
        assert "Content-Length" in batches[0].errors[0]["message"]
    assert count(app, CustomerEvent) == 0 and count(app, Customer) == 0
    whole = server.exchange(request_head("POST", "/api/v1/events/upload", headers), chunked([body[:at], body[at:]]))
    assert whole.status == 200 and whole.json()["accepted"] == 4000, whole.raw[:300]
