"""One JSON error shape for every failure of the API."""
import gzip  # noqa: F401  (kept for symmetry with ingestion tests)

import pytest


def _is_error(response, status, code=None):
    body = response.get_json()
    assert response.status_code == status, body
    assert set(body) == {"error"} and set(body["error"]) == {"status", "code", "message", "details"}
    assert body["error"]["status"] == status
    if code:
        assert body["error"]["code"] == code
    return body["error"]


def test_malformed_json_is_400(client, admin):
    _is_error(client.post("/api/v1/regions", data="{bad", headers=admin, content_type="application/json"),
              400, "malformed_json")


def test_empty_body_is_400(client, admin):
    _is_error(client.post("/api/v1/regions", data="", headers=admin, content_type="application/json"), 400)


def test_unknown_and_missing_fields_are_named(client, admin):
    err = _is_error(client.post("/api/v1/regions", json={"code": "x", "colour": "red"}, headers=admin), 422,
                    "validation_error")
    assert err["details"]["fields"]["json"] == {"colour": ["Unknown field."], "name": ["Missing data for required field."]}


def test_wrong_types_are_named(client, admin):
    err = _is_error(client.post("/api/v1/stores", json={"code": 5, "name": "n", "region": "r1", "size_sqm": "big"},
                                headers=admin), 422)
    assert set(err["details"]["fields"]["json"]) == {"code", "size_sqm"}


def test_oversized_body_is_413_with_limit(app, client, admin):
    app.config["MAX_CONTENT_LENGTH"] = 1000
    err = _is_error(client.post("/api/v1/regions", data="x" * 5000, headers=admin, content_type="application/json"),
                    413, "payload_too_large")
    assert "1000" in err["message"] and err["details"]["limit_bytes"] == 1000


def test_unknown_route_and_method_are_json(client, admin):
    _is_error(client.get("/api/v1/nothing-here", headers=admin), 404, "not_found")
    _is_error(client.put("/api/v1/regions", json={}, headers=admin), 405, "method_not_allowed")


def test_not_found_resource(client, admin):
    err = _is_error(client.get("/api/v1/stores/NOPE", headers=admin), 404)
    assert "NOPE" in err["message"]


def test_server_error_hides_details(app, client, admin):
    @app.get("/api/v1/boom")
    def boom():
        raise RuntimeError("secret database detail")

    from pilot.auth import RULES
    RULES["boom"] = {"GET": frozenset({"admin"})}
    try:
        err = _is_error(client.get("/api/v1/boom", headers=admin), 500, "internal_error")
    finally:
        del RULES["boom"]
    assert "secret" not in err["message"]


@pytest.mark.parametrize("header", [None, "Bearer nope", "Basic abc", "Bearer "])
def test_missing_or_bad_token_is_401(client, tokens, header):
    headers = {"Authorization": header} if header else {}
    _is_error(client.get("/api/v1/regions", headers=headers), 401, "unauthorized")


def test_nul_characters_are_a_422_naming_the_field(client, auth, admin):
    """PostgreSQL text cannot hold NUL: refused as a validation error of the field on both databases
    (it was a database error, a 500, on PostgreSQL; found by fuzzing the till on PostgreSQL)."""
    r = client.post("/api/v1/regions", json={"code": "rx", "name": "North\x00"}, headers=auth("manager"))
    assert r.status_code == 422 and "NUL" in r.json["error"]["details"]["fields"]["json"]["name"][0]
    r = client.post("/api/v1/pilots/p1/assignments", json={"customer": "c\x00"}, headers=auth("feed"))
    assert r.status_code == 422 and list(r.json["error"]["details"]["fields"]["json"]) == ["customer"]
    r = client.post("/api/v1/pilots/p1/assignments", headers=auth("feed"), json={
        "customer": "c1", "new_customer": {"attributes": {"note": ["fine", "not\x00fine"]}}})
    assert r.status_code == 422 and r.json["error"]["details"]["fields"]["json"]["new_customer"]["attributes"]
    assert client.get("/api/v1/regions/rx", headers=admin).status_code == 404  # nothing stored
