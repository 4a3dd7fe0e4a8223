"""Data-quality alarms scoped to what a failed or rejected batch concerned (pilot.data_quality):
its stores or customers and its window, and only while its rows are missing."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pilot import ingestion
from pilot.db import db
from pilot.models import IngestionBatch
from tests.factories import act, login, pilot_body


@pytest.fixture
def two_pilots(client, running, auth):
    """p1 (regions ra and rb, the `running` fixture) and p2 (region rc), both assigned, each with a sale
    per customer since they started."""
    body = pilot_body("p2", layer="second")
    body["stages"] = [{**body["stages"][0], "region_codes": ["rc"]}]
    assert client.post("/api/v1/pilots", json=body, headers=running).status_code == 201
    assert act(client, running, "p2", "start", assign=False).status_code == 200  # assigned below
    for key in ("p1", "p2"):
        assert client.post(f"/api/v1/pilots/{key}/assignments/bulk", json={}, headers=running).status_code == 200
    assert post(client, auth, [sale(i) for i in range(300)]).status_code == 200
    return running


def sale(i: int, **over) -> dict:
    """Customer c<i> buys at their home store (ra for i % 3 == 0, rb for 1, rc for 2) a second ago."""
    when = datetime.now(UTC) - timedelta(milliseconds=300 - i)
    return {"event_id": f"s{i}", "customer": f"c{i}", "store": f"r{'abc'[i % 3]}{i % 8}",
            "occurred_at": when.isoformat(), "amount": f"{10 + i % 7}.50", **over}


def post(client, auth, rows):
    return client.post("/api/v1/transactions", json={"transactions": rows}, headers=auth("feed"),
                       query_string={"source": "pos"})


def problems(client, auth, key: str) -> tuple[dict, dict]:
    run = client.post(f"/api/v1/pilots/{key}/analyses", json={}, headers=auth("analyst")).json
    return {p["code"]: p for p in run["results"]["data_quality"]["problems"]}, {**run["recommendation"],
                                                                               "run": run["id"]}


def test_a_rejected_batch_alarms_only_the_pilot_it_concerned_until_its_rows_arrive(app, client, auth, tokens,
                                                                                   two_pilots):
    late = [sale(i, event_id=f"late{i}") for i in range(0, 30, 3)]  # ra stores: pilot p1's
    bad = post(client, auth, late[:-1] + [{**late[-1], "amount": "-3"}])  # one bad row: all rejected
    assert bad.status_code == 422
    batch_id = bad.json["error"]["details"]["batch_id"]
    found, rec = problems(client, auth, "p1")
    assert found["failed_batches"]["batches"] == [batch_id]
    assert f"batch {batch_id} (pos, rejected" in found["failed_batches"]["message"]
    assert rec["decision"] == "investigate" and found["failed_batches"]["message"] in \
        [r["message"] for r in rec["reasons"]]
    browser = app.test_client()
    login(browser, tokens["analyst"])
    assert f"batch {batch_id} (pos, rejected" in browser.get(f"/analyses/{rec['run']}").get_data(as_text=True)
    assert "failed_batches" not in problems(client, auth, "p2")[0]  # rc stores, other customers: not p2's
    # some of its events arrive: still missing; all of them (corrected): the alarm clears
    assert post(client, auth, late[:5]).status_code == 200
    assert problems(client, auth, "p1")[0]["failed_batches"]["batches"] == [batch_id]
    assert post(client, auth, late[:-1] + [{**late[-1], "amount": "3"}]).status_code == 200
    assert "failed_batches" not in problems(client, auth, "p1")[0]


def test_a_failed_batch_concerns_a_pilot_by_its_customers_and_window(app, client, auth, two_pilots):
    # customer c2 (p2's, home rc2) buys in ra1 (a p1 store): both pilots concerned
    with app.app_context(), pytest.raises(RuntimeError):
        with ingestion.batch(db.session, "feed test", "json", source="pos") as ingest:
            ingest.add(1, sale(2, event_id="away", store="ra1"))
            raise RuntimeError("the connection broke")
    with app.app_context():
        failed = db.session.query(IngestionBatch).filter_by(status="failed").one()
        assert failed.scope["stores"] and failed.scope["customers"] == ["c2"] and failed.scope["event_ids"] == ["away"]
    assert problems(client, auth, "p1")[0]["failed_batches"]["batches"] == [failed.id]  # its store
    assert problems(client, auth, "p2")[0]["failed_batches"]["batches"] == [failed.id]  # its customer
    # rows from long before the pilots (and their pre-period) concern neither
    with app.app_context(), pytest.raises(RuntimeError):
        with ingestion.batch(db.session, "feed test", "json", source="pos") as ingest:
            old = (datetime.now(UTC) - timedelta(days=400)).isoformat()
            ingest.add(1, sale(3, event_id="old", occurred_at=old))
            raise RuntimeError("the connection broke")
    assert problems(client, auth, "p1")[0]["failed_batches"]["batches"] == [failed.id]
    assert post(client, auth, [sale(2, event_id="away", store="ra1")]).status_code == 200
    assert "failed_batches" not in problems(client, auth, "p1")[0]
    assert "failed_batches" not in problems(client, auth, "p2")[0]
