"""Customers: bulk upsert by external id, JSON and CSV, all or nothing."""
import pytest
from sqlalchemy import func, select

from pilot.db import db
from pilot.models import Customer


def _count(app):
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Customer))


def test_json_batch_upserts(app, client, auth):
    feed = auth("feed")
    batch = [{"external_id": f"c{i}", "home_store": "T001", "age_band": "25-34", "household_size": 3,
              "children": 1, "attributes": {"vip": i % 2 == 0}} for i in range(5)]
    assert client.post("/api/v1/customers", json={"customers": batch}, headers=feed).json == \
        {"rows": 5, "created": 5, "updated": 0}
    batch[0]["age_band"] = "35-44"
    assert client.post("/api/v1/customers", json={"customers": batch[:2]}, headers=feed).json == \
        {"rows": 2, "created": 0, "updated": 2}
    got = client.get("/api/v1/customers/c0", headers=auth("analyst")).json
    assert got["age_band"] == "35-44" and got["home_store"] == "T001" and got["attributes"] == {"vip": True}
    assert _count(app) == 5


def test_bad_rows_and_duplicates_store_nothing(app, client, auth):
    batch = [{"external_id": f"c{i}", "home_store": "T001"} for i in range(10)]
    batch[3]["home_store"] = "NOPE"
    batch[5]["children"] = "many"
    batch[7]["external_id"] = "c1"
    batch[8]["shoe_size"] = 44
    r = client.post("/api/v1/customers", json={"customers": batch}, headers=auth("feed"))
    assert r.status_code == 422
    assert {(e["row"], e["field"]) for e in r.json["error"]["details"]["rows"]} == \
        {(4, "home_store"), (6, "children"), (8, "external_id"), (9, "shoe_size")}
    assert _count(app) == 0


def test_batch_row_limit(app, client, auth):
    app.config["BATCH_ROW_LIMIT"] = 3
    r = client.post("/api/v1/customers", json={"customers": [{"external_id": str(i)} for i in range(4)]},
                    headers=auth("feed"))
    assert r.status_code == 413 and "3" in r.json["error"]["message"]


def test_csv_import_with_free_attributes(app, client, auth):
    body = "\ufeffexternal_id,home_store,age_band,children,household_size,loyalty_tier\n" \
           "x1,T001,65+,0,1,gold\nx2,T002,18-24,,,\n"
    r = client.post("/api/v1/customers/import", data=body.encode(), content_type="text/csv", headers=auth("feed"))
    assert r.json == {"rows": 2, "created": 2, "updated": 0}
    x1 = client.get("/api/v1/customers/x1", headers=auth("manager")).json
    assert x1["attributes"] == {"loyalty_tier": "gold"} and x1["children"] == 0 and x1["household_size"] == 1


def test_csv_bad_row_in_the_middle(app, client, auth):
    lines = [f"y{i},T001,{'45-54' if i != 500 else '45+'}" for i in range(1000)]
    r = client.post("/api/v1/customers/import", data="external_id,home_store,age_band\n" + "\n".join(lines),
                    content_type="text/csv", headers=auth("feed"))
    assert r.status_code == 422 and r.json["error"]["details"]["rows"][0]["row"] == 501
    assert _count(app) == 0
    assert client.post("/api/v1/customers/import", data="home_store\nT001\n", content_type="text/csv",
                       headers=auth("feed")).json["error"]["details"]["columns"]["missing"] == ["external_id"]
    assert client.post("/api/v1/customers/import", json={}, headers=auth("feed")).status_code == 415


@pytest.mark.parametrize("customers", [7, 6])  # a short last page, and pages that fit exactly
def test_list_pages_hold_every_customer_once_in_order(client, auth, customers):
    sent = [f"p{i}" for i in range(customers)]
    client.post("/api/v1/customers", json={"customers": [{"external_id": e} for e in sent]}, headers=auth("feed"))
    pages, cursor = [], None
    while len(pages) <= customers:  # a cursor that never ends fails here, not by hanging
        query = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/v1/customers", query_string=query, headers=auth("analyst")).json
        pages.append([c["external_id"] for c in page["items"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert cursor is None
    assert all(1 <= len(p) <= 2 for p in pages) and len(pages) == -(-customers // 2), pages
    assert [e for p in pages for e in p] == sent
