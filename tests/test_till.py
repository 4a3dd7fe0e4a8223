"""The lean till path (pilot.api.fast_assignment): it answers byte for byte as the app's view does, and hands on
to the app every request it cannot answer completely. tests/test_assignment.py runs every till
test with and without it."""
from functools import cache

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from pilot import create_app
from pilot.api.fast_assignment import FastAssignmentPath, fast_assignment_path
from pilot.auth import hash_token
from pilot.db import db
from pilot.models import ApiToken, Assignment, Customer
from tests.factories import assign


@pytest.fixture
def lean(app, backend):
    if backend[0] != "postgresql":
        pytest.skip("the lean till path acts on PostgreSQL only (set PILOT_TEST_DATABASE_URL)")
    return fast_assignment_path(app)


def _by_the_view(app, client, headers, customer, **body):
    app.config["TILL_LEAN_PATH"] = False
    try:
        return assign(client, headers, customer, **body)
    finally:
        app.config["TILL_LEAN_PATH"] = True


REQUESTS = [
    ("c0", {}),  # an enrolled customer, assigned now
    ("c3", {"store": "rb1"}),  # buying in another enrolled store
    ("walk-in", {"store": "ra1", "new_customer": {"home_store": "ra1", "age_band": "35-44", "children": 2,
                                                   "attributes": {"segment": "family"}}}),  # created here
    ("walk-in-2", {"new_customer": {"home_store": "ra4"}}),  # the new home store is where they buy
    ("nobody", {}),  # unknown_customer
    ("c2", {}),  # store_not_enrolled (home store in region rc)
    ("walk-in-3", {"new_customer": {"home_store": "rc1"}}),  # created, store_not_enrolled
]


@pytest.mark.parametrize("customer, body", REQUESTS, ids=[c for c, _ in REQUESTS])
def test_lean_answers_as_the_view(app, client, running, auth, lean, customer, body):
    """The first answer comes from the lean path; the same request then answered by the view and
    again by the lean path must be the same bytes (a repeat: same variant, same time)."""
    feed = auth("feed")
    first = assign(client, feed, customer, **body)
    assert first.status_code == 200 and first.headers.get("X-Pilot-Path") == "fast"
    view = _by_the_view(app, client, feed, customer, **body)
    again = assign(client, feed, customer, **body)
    assert "X-Pilot-Path" not in view.headers and again.headers.get("X-Pilot-Path") == "fast"
    assert view.status_code == again.status_code == 200
    assert view.data == again.data and view.headers["Content-Type"] == again.headers["Content-Type"]
    assert first.json == {**view.json, "new": first.json["new"]}
    assert not view.json["new"]
    assert first.json["new"] == first.json["assigned"]


def test_what_the_lean_path_hands_on(app, client, running, auth, tokens, lean):
    """Error answers, invalid bodies and steps that need the session are the view's: the same
    status and error as with the lean path off, and nothing answered by the lean path."""
    feed, store = auth("feed"), auth("store")
    cases = [
        (feed, "/api/v1/pilots/p1/assignments", {"customer": ""}),  # 422: too short
        (feed, "/api/v1/pilots/p1/assignments", {"customer": "c0", "colour": "red"}),  # 422: unknown field
        (feed, "/api/v1/pilots/p1/assignments", {"customer": "c9", "store": "zz9"}),  # 422: unknown store
        (feed, "/api/v1/pilots/p1/assignments", {"customer": "w1", "new_customer": {"home_store": "zz9"}}),
        (feed, "/api/v1/pilots/p1/assignments", {"customer": "w2", "new_customer": {"age_band": "old"}}),
        (feed, "/api/v1/pilots/nope/assignments", {"customer": "c0"}),  # 404
        (feed, "/api/v1/pilots/caf\u00e9/assignments", {"customer": "c0"}),  # 404: no key looks like that
        (store, "/api/v1/pilots/p1/assignments", {"customer": "c0", "store": "T002"}),  # 403: another store
        (auth("analyst"), "/api/v1/pilots/p1/assignments", {"customer": "c0"}),  # 403: role
        ({"Authorization": "Bearer plt_nothing"}, "/api/v1/pilots/p1/assignments", {"customer": "c0"}),  # 401
        ({}, "/api/v1/pilots/p1/assignments", {"customer": "c0"}),  # 401: no token
    ]
    for headers, path, body in cases:
        got = client.post(path, json=body, headers=headers)
        assert "X-Pilot-Path" not in got.headers, body  # the view answered
        app.config["TILL_LEAN_PATH"] = False
        want = client.post(path, json=body, headers=headers)
        app.config["TILL_LEAN_PATH"] = True
        assert got.status_code == want.status_code >= 400 and got.json == want.json, (body, got.json)
    malformed = client.post("/api/v1/pilots/p1/assignments", data=b'{"customer": ', headers={
        **feed, "Content-Type": "application/json"})
    assert malformed.status_code == 400 and malformed.json["error"]["code"] == "malformed_json"
    as_form = client.post("/api/v1/pilots/p1/assignments", data={"customer": "c0"}, headers=feed)
    assert as_form.status_code == 422
    assert "X-Pilot-Path" not in malformed.headers and "X-Pilot-Path" not in as_form.headers
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Assignment)) == 0
        assert db.session.scalar(select(func.count()).select_from(Customer).where(Customer.external_id.like("w%"))) == 0


def test_group_eligibility_is_the_views(client, running, auth, lean):
    """A stage limited to customer groups needs the groups' rules (the ORM session): the view decides."""
    client.patch("/api/v1/pilots/p1/stages/1", json={"eligible_groups": ["seniors"]}, headers=running)
    answers = [assign(client, auth("feed"), c) for c in ("c4", "c1", "c1")]
    assert answers[0].json["reason"] == "group_not_eligible"  # 25-34
    assert answers[1].json["assigned"] and answers[2].json["assigned"]  # 65+
    assert [a.headers.get("X-Pilot-Path") for a in answers] == [None, None, "fast"]  # a repeat needs no groups


def test_a_token_first_seen_by_the_lean_path_is_remembered(app, client, running, auth, tokens, lean):
    seen = app.extensions.setdefault("pilot.tokens_seen", {})
    assert hash_token(tokens["feed"]) not in seen
    answer = assign(client, auth("feed"), "c0")
    assert answer.json["assigned"] and answer.headers.get("X-Pilot-Path") == "fast"
    assert seen[hash_token(tokens["feed"])].role == "feed"
    with app.app_context():  # and its use is recorded, as the app records it
        assert db.session.scalar(select(ApiToken.last_used_at).where(ApiToken.role == "feed")) is not None


_text = st.one_of(st.none(), st.integers(), st.text(max_size=3), st.text(min_size=127, max_size=130), st.just(""))
_new = st.one_of(st.none(), st.integers(), st.dictionaries(st.sampled_from(["home_store", "age_band", "extra"]), _text,
                                                           max_size=2))
_bodies = st.one_of(st.integers(), st.lists(st.integers(), max_size=1), st.dictionaries(
    st.sampled_from(["customer", "store", "new_customer", "extra"]), st.one_of(_text, _new), max_size=4))


@cache
def _lean() -> FastAssignmentPath:
    return FastAssignmentPath(create_app({"DATABASE_URL": "sqlite://", "AUTO_MIGRATE": False}), None)


@settings(max_examples=400, deadline=None)
@given(body=_bodies)
@example(body={"customer": "c1"})
@example(body={"customer": "c1", "store": "S001", "new_customer": {"home_store": "S001"}})
@example(body={"customer": "c1", "store": None, "new_customer": {}})
@example(body={"customer": "x" * 128, "new_customer": {"home_store": None}})
def test_the_plain_bodies_load_as_the_schema_loads_them(body):
    """FastAssignmentPath.plain reads the usual bodies without marshmallow; whatever it reads must be exactly
    what AssignIn loads (and it must leave every other body to the schema)."""
    lean = _lean()
    got = lean.plain(body)
    if got is not None:
        assert got == lean.schema.load(body)
    elif isinstance(body, dict) and isinstance(body.get("customer"), str) and 0 < len(body["customer"]) < 129 \
            and set(body) <= {"customer", "store"} and isinstance(body.get("store"), (str, type(None))) \
            and "\x00" not in body["customer"] + (body.get("store") or ""):
        pytest.fail(f"a plain body left to the schema: {body!r}")
