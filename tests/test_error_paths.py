"""One field-path shape across the API (`details.errors`), beside each check's `details.fields`; HTML error
pages, in the site's layout, for page routes."""
from __future__ import annotations

import copy

import pytest

from pilot.errors import Conflict, field_paths
from tests.factories import PROGRAMME, login, pilot_body


def _errors(r, status=422):
    assert r.status_code == status, r.json
    assert r.json["error"]["code"] == "validation_error"
    return r.json["error"]["details"]


def test_field_paths_flatten_every_shape_the_checks_give():
    assert field_paths({"json": {"variants": {0: {"parameters": ["Bad."]}}, "name": ["Missing."]}}) == [
        {"path": "variants[0].parameters", "message": "Bad."}, {"path": "name", "message": "Missing."}]
    assert field_paths({"variants": {"1": {"parameters": {"rate": ["Too big."]}}}}) == [
        {"path": "variants[1].parameters.rate", "message": "Too big."}]
    assert field_paths({"query": {"cursor": ["Invalid cursor."]}}) == [{"path": "cursor", "message": "Invalid cursor."}]
    assert field_paths({"a.2.b": ["x"], "c": {"_schema": ["y"]}}) == [
        {"path": "a[2].b", "message": "x"}, {"path": "c", "message": "y"}]


def test_a_variants_parameter_is_named_by_its_path(client, world):
    body = copy.deepcopy(PROGRAMME) | {"key": "other"}
    body["variants"][1]["parameters"] = {"rate": 0.9}
    details = _errors(client.post("/api/v1/programmes", json=body, headers=world))
    assert details["errors"] == [{"path": "variants[1].parameters.rate", "message": details["errors"][0]["message"]}]
    assert "rate" in details["fields"]["variants"]["1"]["parameters"]  # the old shape stays
    patch = {"variants": [{"key": "discount", "mechanic": "fixed_discount", "parameters": {"discount_rate": 0.1}}]}
    details = _errors(client.patch("/api/v1/programmes/loyalty", json=patch, headers=world))
    assert {e["path"] for e in details["errors"]} == {"variants[0].parameters.rate",
                                                      "variants[0].parameters.discount_rate"}


def test_request_schema_errors_list_every_field_without_the_location(client, world):
    body = {"key": "x y", "variants": [{"key": "c", "mechanic": "nope"}]}
    details = _errors(client.post("/api/v1/programmes", json=body, headers=world))
    assert {e["path"] for e in details["errors"]} == {"key", "name", "variants[0].mechanic"}
    assert set(details["fields"]["json"]) == {"key", "name", "variants"}
    details = _errors(client.get("/api/v1/pilots", query_string={"limit": 0}, headers=world))
    assert [e["path"] for e in details["errors"]] == ["limit"]


def test_stage_errors_are_named_by_index_not_position(client, world):
    body = pilot_body()
    body["stages"][0]["allocation"] = {"control": 0.5, "discount": 0.4}
    details = _errors(client.post("/api/v1/pilots", json=body, headers=world))
    assert [e["path"] for e in details["errors"]] == ["stages[0].allocation"]
    assert list(details["fields"]) == ["stages.1"]
    body = pilot_body()
    body["stages"][1]["region_codes"] = ["zz"]
    details = _errors(client.post("/api/v1/pilots", json=body, headers=world))
    assert [e["path"] for e in details["errors"]] == ["stages[1].region_codes"]
    body = pilot_body()
    body["stages"][0]["planned_start"] = "2020-01-01"
    r = client.post("/api/v1/pilots", json=body, headers=world)
    assert r.status_code == 422 and r.json["error"]["code"] == "planned_start_in_past"
    assert [e["path"] for e in r.json["error"]["details"]["errors"]] == ["stages[0].planned_start"]


def test_customer_group_rule_errors_have_paths(client, world):
    group = {"key": "g", "name": "G", "rules": [{"attribute": "age_band", "op": "eq", "value": "25-34"},
                                                {"attribute": "children", "op": "between", "value": [3, 1]}]}
    details = _errors(client.post("/api/v1/customer-groups", json=group, headers=world))
    assert [e["path"] for e in details["errors"]] == ["rules[1]"] or \
        [e["path"] for e in details["errors"]][0].startswith("rules[1]")


def test_batch_row_errors_keep_their_own_shape(client, world, auth):
    r = client.post("/api/v1/transactions", json={"transactions": [{"event_id": "e1"}]}, headers=auth("feed"))
    assert r.status_code == 422
    details = r.json["error"]["details"]
    assert isinstance(details["errors"], int) and details["rows"][0]["row"] == 1  # a count, as before


@pytest.fixture
def failing(app):
    def conflict():
        raise Conflict("The programme is in use by pilot p1.", code="programme_in_use")

    def crash():
        raise RuntimeError("secret stack detail")
    app.add_url_rule("/test-conflict", "test_conflict", conflict)
    app.add_url_rule("/test-crash", "test_crash", crash)
    return app


@pytest.mark.parametrize("role", ["manager"])
def test_page_errors_are_html_in_the_sites_layout(client, failing, tokens, role):
    login(client, tokens[role])
    for path, status, text in (("/pilots/nope", 404, "No pilot &#39;nope&#39;."),
                               ("/test-conflict", 409, "The programme is in use by pilot p1."),
                               ("/test-crash", 500, "Something went wrong on our side")):
        r = client.get(path)
        assert r.status_code == status and r.mimetype == "text/html", path
        page = r.get_data(as_text=True)
        assert text in page and "<header>" in page and "/assets/bootstrap.min.css" in page
        assert ("Log out" in page) == (path == "/pilots/nope")
        assert "secret stack detail" not in page and '"error"' not in page
    client.post("/logout", data={"csrf_token": ""})


def test_a_store_login_on_a_managers_page_is_a_403_page(client, tokens):
    login(client, tokens["store"])
    r = client.get("/pilots")
    assert r.status_code == 403 and r.mimetype == "text/html"
    assert "Not allowed" in r.get_data(as_text=True)
    assert client.get("/api/v1/pilots/nope", headers={"Authorization": f"Bearer {tokens['manager']}"}).json[
        "error"]["code"] == "not_found"  # the API stays JSON


def test_the_stylesheet_is_served_locally(client):
    with client.get("/assets/bootstrap.min.css") as r:
        assert r.status_code == 200 and r.mimetype == "text/css" and b"Bootstrap" in r.data[:200]
