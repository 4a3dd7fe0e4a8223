"""GET /api/v1/pilots/{key}/assignments: who got which variant, page by page, filtered, scoped by role."""
from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from sqlalchemy import select

from pilot.db import db
from pilot.models import Assignment, Customer
from tests.factories import ALLOCATION, act, login, pilot_body

URL = "/api/v1/pilots/p1/assignments"


@pytest.fixture
def assigned(client, running, auth):
    """The running pilot with every eligible customer of ra and rb assigned, plus customers of T001/T002
    in a second pilot over region r1 (the store token's store is T001)."""
    assert client.post(URL + "/bulk", headers=running).status_code == 200
    customers = [{"external_id": f"t{i}", "home_store": "T001" if i % 2 else "T002"} for i in range(20)]
    assert client.post("/api/v1/customers", json={"customers": customers}, headers=auth("feed")).status_code == 200
    body = pilot_body("p2", layer="other")
    body["stages"] = [{"name": "r1", "region_codes": ["r1"], "allocation": ALLOCATION}]
    assert client.post("/api/v1/pilots", json=body, headers=running).status_code == 201
    act(client, running, "p2", "start", assign=False)  # assigned in the request, below
    assert client.post("/api/v1/pilots/p2/assignments/bulk", headers=running).status_code == 200
    return running


def _all(client, headers, url, limit=37, **filters):
    items, cursor, pages = [], None, 0
    while True:
        query = {"limit": limit, **filters, **({"cursor": cursor} if cursor else {})}
        r = client.get(url, query_string=query, headers=headers)
        assert r.status_code == 200, r.json
        items += r.json["items"]
        pages += 1
        cursor = r.json["next_cursor"]
        if cursor is None:
            return items, pages


def test_pages_list_every_assignment_once_matching_the_database(client, app, assigned, auth):
    items, pages = _all(client, auth("analyst"), URL)
    with app.app_context():
        stored = {(c, v) for c, v in db.session.execute(
            select(Customer.external_id, Assignment.variant).join(Customer, Customer.id == Assignment.customer_id)
            .where(Assignment.pilot_id == 1))}
    assert len(items) == len(stored) > 100 and pages == -(-len(stored) // 37)
    assert {(i["customer"], i["variant"]) for i in items} == stored
    first = items[0]
    assert set(first) == {"customer", "variant", "stage", "home_store", "store", "group", "assigned_at"}
    assert first["stage"] == 1 and first["group"] in ("seniors", "other")


def test_filters_variant_store_group_and_since(client, assigned, auth):
    h = auth("manager")
    everyone, _ = _all(client, h, URL)
    for name, value, pick in (("variant", "tiers", lambda i: i["variant"] == "tiers"),
                              ("store", "ra3", lambda i: i["home_store"] == "ra3"),
                              ("group", "seniors", lambda i: i["group"] == "seniors"),
                              ("group", "other", lambda i: i["group"] == "other")):
        r = client.get(URL, query_string={name: value, "limit": 1000}, headers=h)
        assert r.status_code == 200
        assert [i["customer"] for i in r.json["items"]] == [i["customer"] for i in everyone if pick(i)] != []
    later = (max(i["assigned_at"] for i in everyone))
    r = client.get(URL, query_string={"since": later, "limit": 1000}, headers=h)
    assert len(r.json["items"]) == len(everyone)  # one bulk run: all at the same time
    future = client.get(URL, query_string={"since": "2999-01-01T00:00:00+00:00"}, headers=h)
    assert future.json == {"items": [], "next_cursor": None}


def test_unknown_filters_and_bad_values_are_422_with_their_path(client, assigned, auth):
    h = auth("manager")
    for query, path in (({"variant": "nope"}, "variant"), ({"store": "nope"}, "store"),
                        ({"group": "nope"}, "group"), ({"since": "yesterday"}, "since"),
                        ({"since": "2026-01-01T00:00:00"}, "since"), ({"cursor": "!!"}, "cursor")):
        r = client.get(URL, query_string=query, headers=h)
        assert r.status_code == 422, query
        assert r.json["error"]["code"] == "validation_error"
        assert [e["path"] for e in r.json["error"]["details"]["errors"]] == [path]
    assert client.get("/api/v1/pilots/nope/assignments", headers=h).status_code == 404


def test_store_tokens_see_their_own_stores_customers_only(client, assigned, auth):
    store = auth("store")  # store T001
    r = client.get("/api/v1/pilots/p2/assignments", query_string={"limit": 1000}, headers=store)
    assert r.status_code == 200
    assert {i["home_store"] for i in r.json["items"]} == {"T001"} and len(r.json["items"]) == 10
    own = client.get("/api/v1/pilots/p2/assignments", query_string={"store": "T001"}, headers=store)
    assert own.status_code == 200 and len(own.json["items"]) == 10
    other = client.get("/api/v1/pilots/p2/assignments", query_string={"store": "T002"}, headers=store)
    assert other.status_code == 403 and other.json["error"]["code"] == "store_scope"
    assert client.get(URL, headers=store).json["items"] == []  # p1 has no customer of T001
    for role in ("admin", "manager", "analyst", "feed"):
        r = client.get("/api/v1/pilots/p2/assignments", query_string={"limit": 1000}, headers=auth(role))
        assert r.status_code == 200 and len(r.json["items"]) == 20, role
    assert client.get(URL).status_code == 401


def test_csv_download_from_the_pilot_page_matches_the_api(client, assigned, auth, tokens):
    items, _ = _all(client, auth("manager"), URL, variant="bonus")
    login(client, tokens["analyst"])
    with client.get("/pilots/p1/assignments.csv?variant=bonus") as r:  # (closed: a stream holds its session)
        assert r.status_code == 200 and r.mimetype == "text/csv"
        assert "attachment" in r.headers["Content-Disposition"]
        rows = list(csv.DictReader(io.StringIO(r.get_data(as_text=True))))
    assert [(x["customer"], x["variant"], x["home_store"]) for x in rows] == \
        [(i["customer"], i["variant"], i["home_store"]) for i in items]
    assert client.get("/pilots/p1/assignments.csv?variant=nope").status_code == 422
    page = client.get("/pilots/p1").get_data(as_text=True)
    assert "assignments.csv" in page and "Assigned customers" in page


def test_csv_for_scripts_with_a_bearer_token_and_formula_cells_quoted(client, app, assigned, auth):
    with app.app_context():
        c = db.session.scalar(select(Customer).join(Assignment, Assignment.customer_id == Customer.id)
                              .where(Assignment.pilot_id == 1).limit(1))
        c.external_id = "=HYPERLINK(1)"
        db.session.commit()
    with client.get("/pilots/p1/assignments.csv", headers=auth("analyst")) as r:
        assert r.status_code == 200
        assert "'=HYPERLINK(1)" in r.get_data(as_text=True)
    assert client.get("/pilots/p1/assignments.csv", headers=auth("store")).status_code == 403


def test_since_is_inclusive(client, app, assigned, auth):
    items, _ = _all(client, auth("manager"), URL)
    with app.app_context():
        first = db.session.scalar(select(Assignment).where(Assignment.pilot_id == 1).limit(1))
        first.assigned_at = first.assigned_at + timedelta(days=1)
        moved = first.assigned_at.isoformat()
        db.session.commit()
    r = client.get(URL, query_string={"since": moved}, headers=auth("manager"))
    assert len(r.json["items"]) == 1
