"""Regions and stores: CRUD, pagination, and the all-or-nothing bulk import."""
from sqlalchemy import func, select

from pilot.db import db
from pilot.models import Store


def _store_count(app):
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Store))


def test_crud(client, auth):
    m = auth("manager")
    assert client.post("/api/v1/stores", json={"code": "A1", "name": "A", "region": "r1", "size_sqm": 900,
                                               "opening_date": "2020-02-01", "attributes": {"mall": True}},
                       headers=m).status_code == 201
    assert client.post("/api/v1/stores", json={"code": "A1", "name": "A", "region": "r1"}, headers=m).status_code == 409
    got = client.get("/api/v1/stores/A1", headers=m).json
    assert got["region"] == "r1" and got["size_sqm"] == 900 and got["attributes"] == {"mall": True}
    client.post("/api/v1/regions", json={"code": "r2", "name": "Two"}, headers=m)
    patched = client.patch("/api/v1/stores/A1", json={"region": "r2", "format": "mini"}, headers=m).json
    assert patched["region"] == "r2" and patched["format"] == "mini" and patched["name"] == "A"
    assert client.patch("/api/v1/stores/A1", json={"code": "B"}, headers=m).status_code == 422
    assert client.delete("/api/v1/regions/r2", headers=m).json["error"]["code"] == "region_in_use"
    assert client.delete("/api/v1/stores/A1", headers=m).status_code == 204
    assert client.get("/api/v1/stores/A1", headers=m).status_code == 404
    assert client.delete("/api/v1/stores/T001", headers=m).status_code == 409  # a store token is bound to it


def test_pagination_walks_every_store_once(client, auth):
    m = auth("manager")
    for i in range(7):
        client.post("/api/v1/stores", json={"code": f"P{i}", "name": "p", "region": "r1"}, headers=m)
    seen, cursor = [], None
    while True:
        page = client.get("/api/v1/stores", query_string={"limit": 3, **({"cursor": cursor} if cursor else {})},
                          headers=m).json
        seen += [s["code"] for s in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(["T001", "T002"] + [f"P{i}" for i in range(7)])
    assert client.get("/api/v1/stores?cursor=!!", headers=m).status_code == 422
    assert client.get("/api/v1/stores?limit=0", headers=m).status_code == 422
    assert [s["code"] for s in client.get("/api/v1/stores?region=r1&limit=2", headers=m).json["items"]] == ["T001", "T002"]


CSV = "code,name,region,size_sqm,opening_date,parking\r\nN1,New one,r1,1200,2019-05-01,yes\r\n" \
      "\"N2\",\"New, two\",r1,,,no\r\nT001,Renamed,r1,800,,\r\n"


def test_csv_import_upserts_with_bom_crlf_quotes_and_free_attributes(app, client, auth):
    r = client.post("/api/v1/stores/import", data=("\ufeff" + CSV).encode(), content_type="text/csv",
                    headers=auth("manager"))
    assert r.status_code == 200, r.json
    assert r.json == {"rows": 3, "created": 2, "updated": 1, "unchanged": 0}
    n2 = client.get("/api/v1/stores/N2", headers=auth("manager")).json
    assert n2["name"] == "New, two" and n2["attributes"] == {"parking": "no"} and n2["size_sqm"] is None
    assert client.get("/api/v1/stores/T001", headers=auth("manager")).json["name"] == "Renamed"
    again = client.post("/api/v1/stores/import", data=CSV, content_type="text/csv", headers=auth("manager"))
    assert again.json["unchanged"] == 3


def test_bad_row_in_the_middle_stores_nothing_and_names_every_bad_row(app, client, auth):
    rows = [f"M{i},Store {i},r1,{100 + i}" for i in range(50)]
    rows[20] = "M20,Store 20,r1,huge"
    rows[35] = "M35,,r1,10"
    rows[40] = "M3,dup,r1,10"
    body = "code,name,region,size_sqm\n" + "\n".join(rows) + "\n"
    before = _store_count(app)
    r = client.post("/api/v1/stores/import", data=body, content_type="text/csv", headers=auth("manager"))
    assert r.status_code == 422
    found = {(e["row"], e["field"]) for e in r.json["error"]["details"]["rows"]}
    assert found == {(21, "size_sqm"), (36, "name"), (41, "code")}
    assert "row 4" in [e for e in r.json["error"]["details"]["rows"] if e["row"] == 41][0]["message"]
    assert _store_count(app) == before


def test_unknown_region_is_a_row_error(app, client, auth):
    r = client.post("/api/v1/stores/import", json={"stores": [{"code": "J1", "name": "j", "region": "r1"},
                                                              {"code": "J2", "name": "j", "region": "zz"}]},
                    headers=auth("manager"))
    assert r.status_code == 422 and r.json["error"]["details"]["rows"] == [
        {"row": 2, "field": "region", "message": "Unknown region 'zz'."}]
    assert client.get("/api/v1/stores/J1", headers=auth("manager")).status_code == 404


def test_csv_header_problems(client, auth):
    m = auth("manager")
    missing = client.post("/api/v1/stores/import", data="code,name\nA,b\n", content_type="text/csv", headers=m)
    assert missing.status_code == 422 and missing.json["error"]["details"]["columns"]["missing"] == ["region"]
    empty = client.post("/api/v1/stores/import", data="", content_type="text/csv", headers=m)
    assert empty.status_code == 422 and "empty" in empty.json["error"]["message"]
    ragged = client.post("/api/v1/stores/import", data="code,name,region\nA,b\n", content_type="text/csv", headers=m)
    assert ragged.status_code == 422 and ragged.json["error"]["details"]["rows"][0]["row"] == 1
    latin = client.post("/api/v1/stores/import", data="code,name,region\nA,K\xf6ln,r1\n".encode("latin-1"),
                        content_type="text/csv", headers=m)
    assert latin.status_code == 422 and "UTF-8" in latin.json["error"]["message"]
    wrong = client.post("/api/v1/stores/import", data="x", content_type="text/plain", headers=m)
    assert wrong.status_code == 415


def test_json_import_shape_errors(client, auth):
    m = auth("manager")
    assert client.post("/api/v1/stores/import", json={"rows": []}, headers=m).status_code == 422
    assert client.post("/api/v1/stores/import", json={"stores": []}, headers=m).status_code == 422
    r = client.post("/api/v1/stores/import", json={"stores": [5]}, headers=m)
    assert r.json["error"]["details"]["rows"] == [{"row": 1, "field": "_row", "message": "Not an object."}]
