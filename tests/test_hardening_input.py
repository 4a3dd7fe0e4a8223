"""Hardening (issue #20, defects 6, 7, 8 query, 9, 13): bad input is a 4xx in the one error shape,
on both databases, through the lean till path as through the app, and under a real gunicorn."""
import gzip
import json

import pytest
from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql

from pilot.assignment import _create_claim_and_insert, _create_customer
from pilot.db import db
from pilot.inputs import MAX_DEPTH, check_depth
from pilot.models import Assignment, Customer, IngestionBatch
from tests.factories import assign


def _error(response, status, code=None):
    body = response.get_json()
    assert response.status_code == status, body
    assert set(body) == {"error"} and set(body["error"]) == {"status", "code", "message", "details"}
    assert body["error"]["status"] == status
    if code:
        assert body["error"]["code"] == code, body
    return body["error"]


# -- 6: path and query text -----------------------------------------------------------------------

NUL_PATHS = ["/api/v1/stores/S%00", "/api/v1/customers/C%00", "/api/v1/regions/n%00", "/api/v1/pilots/c%00",
             "/api/v1/programmes/c%00", "/api/v1/customer-groups/f%00"]
NUL_QUERIES = [("/api/v1/transactions", "customer"), ("/api/v1/transactions", "store"),
               ("/api/v1/transactions", "source"), ("/api/v1/audit", "actor"), ("/api/v1/audit", "entity_id"),
               ("/api/v1/data-quality", "store"), ("/api/v1/stores", "region")]
CSV = b"event_id,customer,store,occurred_at,amount\ne1,c1,T001,2026-10-05T09:30:00+02:00,9.99\n"


@pytest.mark.parametrize("path", NUL_PATHS)
def test_nul_in_a_path_is_a_400_naming_the_path(client, admin, path):
    err = _error(client.get(path, headers=admin), 400, "invalid_text")
    assert list(err["details"]["fields"]) == ["path"] and "NUL" in err["details"]["fields"]["path"][0]


@pytest.mark.parametrize("path, name", NUL_QUERIES, ids=[f"{p.rsplit('/', 1)[1]}-{n}" for p, n in NUL_QUERIES])
@pytest.mark.parametrize("value", ["%00", "a%00b"])
def test_nul_in_a_query_argument_is_a_400_naming_it(client, admin, path, name, value):
    err = _error(client.get(f"{path}?limit=5&{name}={value}", headers=admin), 400, "invalid_text")
    assert list(err["details"]["fields"]["query"]) == [name]


@pytest.mark.parametrize("source", ["a%00b", "%FF", "caf%C3", "a%0Ab", "a%1Bb", "a%7Fb"],
                         ids=["nul", "not-utf8", "cut-utf8", "newline", "escape", "del"])
def test_an_upload_whose_source_is_not_clean_text_stores_nothing(app, client, auth, source):
    """Invalid UTF-8 used to be stored as U+FFFD (and NUL was a 500 on PostgreSQL): refused, no batch."""
    r = client.post(f"/api/v1/transactions/upload?source={source}", data=CSV,
                    headers={**auth("feed"), "Content-Type": "text/csv"})
    err = _error(r, 400, "invalid_text")
    assert list(err["details"]["fields"]["query"]) == ["source"]
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(IngestionBatch)) == 0


def test_clean_text_still_passes(client, auth):
    """UTF-8 text (and an encoded space or plus) is fine: only bad bytes and control characters are refused."""
    r = client.post("/api/v1/transactions/upload?source=caf%C3%A9+pos%2B1", data=CSV,
                    headers={**auth("feed"), "Content-Type": "text/csv"})
    assert r.status_code == 200, r.json
    got = client.get("/api/v1/transactions?source=caf%C3%A9%20pos%2B1", headers=auth("analyst")).json
    assert [t["source"] for t in got["items"]] == ["caf\u00e9 pos+1"]


def test_a_bad_parameter_name_is_refused_too(client, admin):
    err = _error(client.get("/api/v1/stores?%FF=1", headers=admin), 400, "invalid_text")
    assert list(err["details"]["fields"]["query"]) == ["\\xff"]


def test_pages_refuse_nul_and_bad_utf8_too(client):
    assert client.get("/stores/S%00").status_code == 400
    assert client.get("/login?next=%FF").status_code == 400


def test_the_guard_stands_before_the_lean_till_path(app, client, running, auth):
    """The lean path (PostgreSQL) never reads the query string: it must not answer what the app refuses."""
    r = client.post("/api/v1/pilots/p1/assignments?note=%00", json={"customer": "c0"}, headers=auth("feed"))
    _error(r, 400, "invalid_text")
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Assignment)) == 0


# -- 7: JSON nesting ------------------------------------------------------------------------------

DEEP_TARGETS = ["/api/v1/transactions", "/api/v1/customers", "/api/v1/programmes",
                "/api/v1/customer-groups/preview", "/api/v1/pilots/p1/assignments"]


def _nested(depth: int) -> bytes:
    return b'{"customer": "c0", "customers": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize("path", DEEP_TARGETS)
def test_deeply_nested_json_is_a_400_naming_the_limit(client, admin, path):
    r = client.post(path, data=_nested(1000), headers={**admin, "Content-Type": "application/json"})
    err = _error(r, 400, "malformed_json")
    assert str(MAX_DEPTH) in err["message"] and err["details"]["limit_depth"] == MAX_DEPTH


def test_deep_json_at_the_till_is_handed_on_and_refused(app, client, running, auth, backend):
    """On PostgreSQL the lean till path parses the body itself: it hands the request on, the app refuses it."""
    r = client.post("/api/v1/pilots/p1/assignments", data=_nested(1000),
                    headers={**auth("feed"), "Content-Type": "application/json"})
    _error(r, 400, "malformed_json")


def test_deep_json_in_a_gzipped_batch_is_a_400(client, auth):
    r = client.post("/api/v1/transactions", data=gzip.compress(_nested(5000)),
                    headers={**auth("feed"), "Content-Type": "application/json", "Content-Encoding": "gzip"})
    _error(r, 400, "malformed_json")


def test_nesting_up_to_the_limit_is_accepted(client, auth):
    """MAX_DEPTH levels parse (and reach validation); one more does not."""
    def post(depth):
        value = "[" * (depth - 4) + "]" * (depth - 4)  # inside an object, a list, a customer, its attributes
        body = json.dumps({"customers": [{"external_id": "deep", "attributes": {"x": "@"}}]}).replace('"@"', value)
        return client.post("/api/v1/customers", data=body, headers={**auth("feed"), "Content-Type": "application/json"})
    assert post(MAX_DEPTH).status_code == 200
    _error(post(MAX_DEPTH + 1), 400, "malformed_json")


@pytest.mark.parametrize("text, depth", [
    ('{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}', 1),  # brackets in a string
    ('["\\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", 1]', 1),  # after an escaped quote
    ('["\\\\", ' + "[" * 70 + "]" * 70 + "]", 71),  # an escaped backslash ends the string before the brackets
    ("[" * 200_000, 200_000),  # unbalanced, and far deeper than the stack: no recursion
    ('"' + '\\"' * 100_000 + "[" * 70, 0),  # an unterminated string (all of it): linear, not quadratic
])
def test_the_depth_check_reads_json_as_json(text, depth):
    if depth <= MAX_DEPTH:
        check_depth(text.encode())
    else:
        with pytest.raises(Exception, match=str(MAX_DEPTH)):
            check_depth(text.encode())


def test_the_depth_check_reads_utf16_as_text():
    check_depth(('["' + "\u5b5b" * 40 + '"]').encode("utf-16"))  # U+5B5B holds the byte of "[" twice


# -- 8: data-quality dates ------------------------------------------------------------------------

@pytest.mark.parametrize("query, field", [
    ("to=9999-12-31", "to"), ("to=0001-01-01", "to"), ("from=0001-01-01&to=0001-01-02", "from"),
    ("from=9999-12-31", "from"), ("from=9999-12-30&to=9999-12-31", "to"),
])
def test_data_quality_dates_out_of_range_are_a_422(client, auth, query, field):
    err = _error(client.get(f"/api/v1/data-quality?{query}", headers=auth("analyst")), 422)
    assert field in err["details"]["fields"]["query"]


def test_data_quality_far_but_valid_dates_answer(client, auth):
    r = client.get("/api/v1/data-quality?from=1990-01-01&to=1990-03-01", headers=auth("analyst"))
    assert r.status_code == 200 and r.json["window"] == {"from": "1990-01-01", "to": "1990-03-01"}


# -- 9: customer groups and chunked bodies --------------------------------------------------------

@pytest.fixture
def group(client, auth):
    m = auth("manager")
    assert client.post("/api/v1/customer-groups", json={"key": "g", "name": "G"}, headers=m).status_code == 201
    return m


@pytest.mark.parametrize("key", ["g", "nope"])
def test_patching_a_rule_without_its_op_is_a_422(client, group, key):
    err = _error(client.patch(f"/api/v1/customer-groups/{key}", json={"rules": [{"attribute": "children"}]},
                              headers=group), 422)
    assert "op" in err["details"]["fields"]["json"]["rules"]["0"]


def test_patching_a_group_that_does_not_exist_is_a_404(client, group):
    body = {"name": "N", "rules": [{"attribute": "children", "op": "gt", "value": 1}]}
    _error(client.patch("/api/v1/customer-groups/nope", json=body, headers=group), 404)
    assert client.patch("/api/v1/customer-groups/g", json=body, headers=group).json["name"] == "N"


def test_a_previewed_group_needs_its_key(client, group):
    err = _error(client.post("/api/v1/customer-groups/preview", json={"groups": [{"name": "x"}, {"key": "b"}]},
                             headers=group), 422)
    assert "key" in err["details"]["fields"]["json"]["groups"]["0"]


BAD_VALUES = [
    {"attribute": "children", "op": "eq", "value": 123456789012345678901234567890},  # beyond any integer column
    {"attribute": "spend", "op": "gt", "value": 123456789012345678901234567890},  # beyond SQLite's integers
    {"attribute": "children", "op": "between", "value": [0, 2**31]},
    {"attribute": "household_size", "op": "in", "value": [1, -2**63 - 1]},
    {"attribute": "children", "op": "eq", "value": "two"},  # text against an integer column
    {"attribute": "household_size", "op": "in", "value": ["one", 2]},
    {"attribute": "spend", "op": "in", "value": [1, "a"]},  # one list, one type
]


@pytest.mark.parametrize("rule", BAD_VALUES, ids=lambda r: f"{r['attribute']}-{r['op']}-{str(r['value'])[:12]}")
def test_rule_values_the_database_cannot_compare_are_a_422(client, group, rule):
    calls = [("post", "/api/v1/customer-groups", {"key": "bad", "name": "B", "rules": [rule]}),
             ("patch", "/api/v1/customer-groups/g", {"rules": [rule]}),
             ("post", "/api/v1/customer-groups/preview", {"groups": [{"key": "k", "rules": [rule]}]})]
    for method, path, body in calls:
        err = _error(getattr(client, method)(path, json=body, headers=group), 422)
        rules = err["details"]["fields"]["json"]
        rules = rules["groups"]["0"]["rules"] if "groups" in rules else rules["rules"]
        assert "value" in rules["0"], err


def test_rule_values_within_range_still_count(client, group, auth):
    client.post("/api/v1/customers", headers=auth("feed"), json={"customers": [
        {"external_id": "a", "children": 2, "attributes": {"spend": 12.5}}, {"external_id": "b", "children": 0}]})
    groups = [{"key": "big", "rules": [{"attribute": "spend", "op": "gt", "value": 2**53}]},
              {"key": "kids", "rules": [{"attribute": "children", "op": "in", "value": [2, 2**31 - 1]}]}]
    got = client.post("/api/v1/customer-groups/preview", json={"groups": groups}, headers=group).json
    assert got["counts"] == {"big": 0, "kids": 1, "other": 1}


def _chunked(body: bytes, size: int = 300) -> bytes:
    parts = [body[i:i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def _raw_post(path: str, token: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode() + _chunked(body)


def _answer(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_under_gunicorn_a_chunked_body_over_the_limit_is_a_413_and_bad_input_a_400(
        live_server, tokens, client, running, auth):
    """A real server (one per backend, to keep the suite quick). gunicorn hands a chunked body on
    without a length: read to the limit, it used to look like complete (cut, so malformed) JSON, a
    400. gunicorn builds PATH_INFO itself; on PostgreSQL the lean till path reads the body before
    the app, and its failure on deep JSON used to be gunicorn's HTML 500."""
    server = live_server(env={"PILOT_MAX_CONTENT_LENGTH": "1000"})
    for path in ("/api/v1/regions", "/api/v1/customers", "/api/v1/transactions", "/api/v1/pilots/p1/assignments"):
        status, body = _answer(server.raw(_raw_post(path, tokens["admin"], b'{"name": "' + b"x" * 5000 + b'"}')))
        assert status == 413 and body["error"]["code"] == "payload_too_large", (path, body)
        assert body["error"]["details"]["limit_bytes"] == 1000
    exact = b'{"code": "rx", "name": "n", "colour": "' + b"x" * 959 + b'"}'
    assert len(exact) == 1000
    status, body = _answer(server.raw(_raw_post("/api/v1/regions", tokens["admin"], exact)))
    assert status == 422 and set(body["error"]["details"]["fields"]["json"]) == {"colour"}, body
    status, body = _answer(server.raw(_raw_post("/api/v1/regions", tokens["admin"], b'{"code": "rx", "name": "X"}')))
    assert status == 201, body

    feed = {"Authorization": f"Bearer {tokens['feed']}", "Content-Type": "application/json"}
    r = server.request("POST", "/api/v1/pilots/p1/assignments", _nested(400), feed)
    assert r.status == 400 and json.loads(r.data)["error"]["code"] == "malformed_json"
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    r = server.request("GET", "/api/v1/stores/S%00", headers=admin)
    assert r.status == 400 and json.loads(r.data)["error"]["details"]["fields"]["path"]
    r = server.request("GET", "/api/v1/transactions?store=%C3%28", headers=admin)
    assert r.status == 400 and list(json.loads(r.data)["error"]["details"]["fields"]["query"]) == ["store"]
    r = server.request("POST", "/api/v1/pilots/p1/assignments", json.dumps({"customer": "c0"}).encode(), feed)
    assert r.status == 200 and json.loads(r.data)["customer"] == "c0"


# -- 13: a store token acts for its own store only ------------------------------------------------

@pytest.mark.parametrize("lean_path", [True, False], ids=["lean", "view"])
@pytest.mark.parametrize("body", [
    {"store": "T001", "new_customer": {"home_store": "T002"}},
    {"new_customer": {"home_store": "T002"}},
    {"store": "T002", "new_customer": {"home_store": "T001"}},
    {"store": "T002"},
], ids=["home-elsewhere", "home-elsewhere-no-store", "buys-elsewhere", "buys-elsewhere-known"])
def test_a_store_token_acts_for_its_own_store_only(app, client, running, auth, backend, body, lean_path):
    if lean_path and backend[0] != "postgresql":
        pytest.skip("the lean till path acts on PostgreSQL only")
    app.config["TILL_LEAN_PATH"] = lean_path
    customer = "c0" if "new_customer" not in body else "walk-in"
    _error(assign(client, auth("store"), customer, **body), 403, "store_scope")
    with app.app_context():
        assert db.session.scalar(select(func.count()).where(Customer.external_id == "walk-in")) == 0


def test_a_store_token_still_creates_customers_of_its_own_store(app, client, running, auth):
    r = assign(client, auth("store"), "walk-in", store="T001", new_customer={"home_store": "T001"})
    assert r.status_code == 200 and r.json["reason"] == "store_not_enrolled"
    assert client.get("/api/v1/customers/walk-in", headers=auth("analyst")).json["home_store"] == "T001"


@pytest.mark.parametrize("method, path", [
    ("post", "/api/v1/pilots/p1/assignments/bulk"), ("post", "/api/v1/customers"), ("post", "/api/v1/customers/import"),
    ("post", "/api/v1/stores/import"), ("post", "/api/v1/transactions"), ("post", "/api/v1/transactions/upload"),
])
def test_a_store_token_has_no_bulk_way_to_other_stores(client, auth, method, path):
    """Every other write that could name another store is closed to store tokens (pilot.auth.RULES)."""
    _error(getattr(client, method)(path, json={}, headers=auth("store")), 403)


# -- found on the way -----------------------------------------------------------------------------

def test_the_one_statement_claim_survives_a_plain_create_run_first():
    """A worker whose first new customer was created the plain way (e.g. at a store not enrolled)
    ran that cached INSERT on the driver, which memoised its columns; the one-statement claim built
    from it afterwards had no `id` column, and every new customer of that worker was a 500."""
    list(_create_customer(True).exported_columns)  # as pilot.driver.DriverStatement reads them
    _create_claim_and_insert.cache_clear()
    assert "RETURNING customers.id" in str(_create_claim_and_insert().compile(dialect=postgresql.dialect()))
