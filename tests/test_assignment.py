"""Assignment: golden cases, uniformity, stickiness, reasons, layers, holdout, bulk, SRM."""
import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from sqlalchemy import func, select, text

from pilot import create_app
from pilot.assignment import AssignmentDb, read_context
from pilot.auth import hash_token
from pilot.bucketing import bucket, variant_for
from pilot.db import db
from pilot.driver import fast_rows
from pilot.models import Assignment
from tests.factories import ALLOCATION, act, assign, pilot_body

GOLDEN = json.loads((Path(__file__).parent / "data" / "assignment_golden.json").read_text())


@pytest.fixture(params=["lean", "full"])
def app(request, backend, database_url):
    """Every test here runs on PostgreSQL twice: with the till's requests answered by the lean path
    (pilot.api.fast_assignment, as in production) and with the lean path off (the app's view answers them all).
    SQLite has no lean path: its tests run once."""
    if request.param == "lean" and backend[0] != "postgresql":
        pytest.skip("the lean till path acts on PostgreSQL only")
    app = create_app({"TESTING": True, "DATABASE_URL": database_url, "AUTO_MIGRATE": False,
                      "SECRET_KEY": "test-secret", "TILL_LEAN_PATH": request.param == "lean"})
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=lambda c: f"{c['salt']}-{c['unit_id']}")
def test_golden_cases(case):
    assert bucket(case["salt"], case["unit_id"]) == case["bucket"]
    assert variant_for(case["salt"], case["unit_id"], case["weights"]) == case["variant"]


@pytest.mark.parametrize("weights", [{"a": 0.5, "b": 0.5}, {"a": 0.2, "b": 0.3, "c": 0.5},
                                     {"c": 0.1, "t1": 0.3, "t2": 0.3, "t3": 0.3}])
def test_uniform_over_100k_ids(weights):
    keys = sorted(weights)
    picks = [variant_for("uniformity", f"id{i}", weights) for i in range(100_000)]
    observed = [picks.count(k) for k in keys]
    p = stats.chisquare(observed, [100_000 * weights[k] for k in keys]).pvalue
    assert p > 0.001, observed
    buckets = np.array([bucket("u2", str(i)) for i in range(20_000)])
    assert stats.kstest(buckets, "uniform").pvalue > 0.001


def test_answer_carries_the_programmes_variant(client, running, auth):
    """Whichever variant a customer gets, the answer carries it as the programme configures it."""
    feed = auth("feed")
    configured = {v["key"]: {k: v[k] for k in ("key", "name", "mechanic", "parameters")}
                  for v in client.get("/api/v1/programmes/loyalty", headers=running).json["variants"]}
    # customers of the enrolled regions (ra, rb) until every variant has come up: the pilot's salt is
    # random, and 20 fixed customers miss one of four equal arms 1.3% of the time
    answered = []
    for i in (i for i in range(300) if i % 3 != 2):
        answered.append(assign(client, feed, f"c{i}").json["variant"])
        if len(answered) >= 20 and {v["key"] for v in answered} == set(configured):
            break
    assert {v["key"] for v in answered} == set(configured)
    assert any(v["parameters"] for v in answered)
    for v in answered:
        assert {k: v[k] for k in ("key", "name", "mechanic", "parameters")} == configured[v["key"]]
        assert v["description"]


def test_assign_is_sticky_and_deterministic(app, client, running, auth):
    feed = auth("feed")
    first = assign(client, feed, "c0").json
    assert first["assigned"] and first["new"]
    assert first["variant"]["key"] == variant_for(_salt(app), "c0", ALLOCATION)
    assert first["variant"]["description"]
    again = assign(client, feed, "c0").json
    assert again["variant"] == first["variant"] and not again["new"] and again["assigned_at"] == first["assigned_at"]
    # weights change: the assigned customer stays put
    client.patch("/api/v1/pilots/p1/stages/1", json={"allocation": {"control": 0.97, "discount": 0.01, "tiers": 0.01,
                                                                    "bonus": 0.01}}, headers=running)
    assert assign(client, feed, "c0").json["variant"] == first["variant"]
    # pause and resume, advance to the wider stage, restart the app: still the same
    act(client, running, "p1", "pause")
    assert assign(client, feed, "c0").json["reason"] == "pilot_not_running"
    act(client, running, "p1", "resume")
    act(client, running, "p1", "advance")
    restarted = create_app({"TESTING": True, "DATABASE_URL": app.config["DATABASE_URL"], "AUTO_MIGRATE": False})
    assert assign(restarted.test_client(), feed, "c0").json["variant"] == first["variant"]
    with restarted.app_context():
        assert db.session.scalar(select(func.count()).select_from(Assignment)) == 1
        db.session.close()
        db.engine.dispose()


def _salt(app):
    from pilot.models import Pilot
    with app.app_context():
        return db.session.scalar(select(Pilot.salt))


def test_every_reason_code(app, client, running, auth):
    feed = auth("feed")
    assert assign(client, feed, "nobody").json["reason"] == "unknown_customer"
    assert assign(client, feed, "c2").json["reason"] == "store_not_enrolled"  # home store in region rc
    assert assign(client, feed, "c2", store="ra1").json["assigned"]  # buying in an enrolled store
    client.post("/api/v1/customers", json={"customers": [{"external_id": "homeless"}]}, headers=feed)
    assert assign(client, feed, "homeless").json["reason"] == "no_store"
    client.patch("/api/v1/pilots/p1/stages/1", json={"eligible_groups": ["seniors"]}, headers=running)
    assert assign(client, feed, "c4").json["reason"] == "group_not_eligible"  # 25-34
    assert assign(client, feed, "c1").json["assigned"]  # 65+
    client.patch("/api/v1/pilots/p1/stages/1", json={"allocation": {"control": 0, "discount": 0, "tiers": 0,
                                                                    "bonus": 1}}, headers=running)
    act(client, running, "p1", "pause")
    assert assign(client, feed, "c7").json["reason"] == "pilot_not_running"
    app.config["HOLDOUT_SHARE"] = 1.0
    act(client, running, "p1", "resume")
    assert assign(client, feed, "c7").json["reason"] == "in_holdout"
    assert assign(client, feed, "c1").json["assigned"]  # already assigned before the holdout: sticky


def test_unknown_customer_created_on_the_fly(client, running, auth):
    r = assign(client, auth("feed"), "walk-in", store="ra2", new_customer={"age_band": "65+", "home_store": "ra2"})
    assert r.json["assigned"]
    assert client.get("/api/v1/customers/walk-in", headers=running).json["home_store"] == "ra2"
    bad = assign(client, auth("feed"), "walk-in-2", new_customer={"age_band": "old"})
    assert bad.status_code == 422
    nowhere = assign(client, auth("feed"), "walk-in-3", store="ra2", new_customer={"home_store": "zz9"})
    assert nowhere.status_code == 422 and nowhere.json["error"]["details"]["fields"]["new_customer"]["home_store"]
    assert client.get("/api/v1/customers/walk-in-3", headers=running).status_code == 404  # nothing written
    # without a store, the new customer's home store is where they buy
    home = assign(client, auth("feed"), "walk-in-4", new_customer={"home_store": "ra3"}).json
    assert home["assigned"] and home["new"]
    outside = assign(client, auth("feed"), "walk-in-5", new_customer={"home_store": "rc3"}).json
    assert outside["reason"] == "store_not_enrolled"
    assert client.get("/api/v1/customers/walk-in-5", headers=running).json["home_store"] == "rc3"


def test_store_token_assigns_in_its_own_store_only(client, running, auth, tokens):
    assert assign(client, auth("store"), "c0", store="T002").status_code == 403
    assert assign(client, auth("store"), "c0", store="T001").json["reason"] == "store_not_enrolled"
    assert assign(client, auth("analyst"), "c0").status_code == 403


def test_layers_keep_pilots_apart(client, running, auth):
    # a second pilot of the same layer over region rc, so customers of rc are free for it
    client.post("/api/v1/pilots", json={**pilot_body("p2"), "stages": [{"region_codes": ["rc"],
                                                                         "allocation": ALLOCATION}]}, headers=running)
    act(client, running, "p2", "start")
    assert assign(client, auth("feed"), "c2", store="ra0").json["assigned"]  # c2 joins p1 while shopping in ra0
    second = client.post("/api/v1/pilots/p2/assignments", json={"customer": "c2"}, headers=auth("feed")).json
    assert second["reason"] == "in_other_pilot_of_layer"
    act(client, running, "p1", "complete", override=True, reason="test: no analysis")  # the layer claim is released when p1 ends
    assert client.post("/api/v1/pilots/p2/assignments", json={"customer": "c2"}, headers=auth("feed")).json["assigned"]


def test_bulk_matches_one_by_one_and_reports_reasons(app, client, running, auth):
    app.config["HOLDOUT_SHARE"] = 0.1
    client.patch("/api/v1/pilots/p1/stages/1", json={"eligible_groups": ["other"]}, headers=running)
    out = client.post("/api/v1/pilots/p1/assignments/bulk", headers=running).json
    salt = _salt(app)
    expected = {}
    for i in range(300):
        cid, region = f"c{i}", "abc"[i % 3]
        if region == "c":
            continue
        if bucket("global-holdout", cid) < 0.1 or i % 2 == 1:  # held out, or a senior (not eligible)
            continue
        v = variant_for(salt, cid, ALLOCATION)
        expected[v] = expected.get(v, 0) + 1
    assert out["variants"] == expected and out["assigned_now"] == sum(expected.values())
    assert out["reasons"]["store_not_enrolled"] == 100
    assert out["reasons"]["in_holdout"] + out["reasons"]["group_not_eligible"] == 200 - sum(expected.values())
    with app.app_context():
        rows = db.session.execute(select(Assignment.customer_id, Assignment.variant)).all()
    assert len(rows) == sum(expected.values())
    again = client.post("/api/v1/pilots/p1/assignments/bulk", headers=running).json
    assert again["assigned_now"] == 0 and again["variants"] == expected
    summary = client.get("/api/v1/pilots/p1/assignments/summary", headers=auth("analyst")).json
    stage = summary["stages"][0]
    assert stage["counts"] == {k: expected.get(k, 0) for k in sorted(ALLOCATION)}
    assert stage["p_value"] == pytest.approx(stats.chisquare([expected.get(k, 0) for k in sorted(ALLOCATION)]).pvalue)


def test_bulk_store_level_gives_the_store_arm(client, world, auth):
    body = pilot_body("sp", unit="store")
    body["stages"] = [{"region_codes": ["ra"], "allocation": {"control": 0.5, "discount": 0.5}}]
    client.post("/api/v1/pilots", json=body, headers=world)
    client.post("/api/v1/customers", json={"customers": [{"external_id": f"s{i}", "home_store": f"ra{i % 8}"}
                                                         for i in range(40)]}, headers=auth("feed"))
    act(client, world, "sp", "start")
    arms = {e["store"]: e["arm"] for e in client.get("/api/v1/pilots/sp/enrolments?limit=50", headers=world).json["items"]}
    client.post("/api/v1/pilots/sp/assignments/bulk", headers=world)
    for i in range(0, 40, 7):
        got = client.post("/api/v1/pilots/sp/assignments", json={"customer": f"s{i}"}, headers=auth("feed")).json
        assert got["variant"]["key"] == arms[f"ra{i % 8}"]


def test_cli_assign(app, running):
    from pilot.cli import cli
    out = app.test_cli_runner().invoke(cli, ["assign", "--pilot", "p1"])
    assert out.exit_code == 0 and json.loads(out.output)["assigned_now"] == 200
    assert app.test_cli_runner().invoke(cli, ["assign", "--pilot", "nope"]).exit_code == 2


def test_a_token_revoked_elsewhere_is_refused_at_the_till(app, client, running, auth):
    """The till reads the token again with its context, so a token this app has seen live (and no
    longer looks up on its own) is refused on its next request after another process revoked it."""
    made = client.post("/api/v1/tokens", json={"name": "pos 7", "role": "feed"}, headers=auth("admin")).json
    pos = {"Authorization": f"Bearer {made['token']}"}
    assert assign(client, pos, "c0").json["assigned"]
    assert assign(client, pos, "c3").json["assigned"]
    seen = app.extensions["pilot.tokens_seen"]
    assert hash_token(made["token"]) in seen  # the second request took the path without a token query
    other = create_app({"DATABASE_URL": app.config["DATABASE_URL"], "AUTO_MIGRATE": False, "TESTING": True})
    assert other.test_client().delete(f"/api/v1/tokens/{made['id']}", headers=auth("admin")).status_code == 200
    with other.app_context():
        db.engine.dispose()
    refused = assign(client, pos, "c6")
    assert refused.status_code == 401 and refused.json["error"]["code"] == "unauthorized", refused.json
    assert hash_token(made["token"]) not in seen
    assert assign(client, pos, "c9").status_code == 401
    with app.app_context():  # nothing was assigned with the revoked token
        assert db.session.scalar(select(func.count()).select_from(Assignment)) == 2


def test_the_till_on_the_driver_reads_what_sqlalchemy_reads(app, client, running, auth, tokens):
    """PostgreSQL runs the till's statements on the driver (pilot.driver.fast_rows); the rows must be
    those SQLAlchemy gives for the same statement: types, UTC times, JSON, NULLs."""
    assert assign(client, auth("feed"), "c0").json["assigned"]
    params = [{"token_hash": hash_token(tokens[role]), "pilot": "p1", "customer": c, "store": s, "new_home": h}
              for role, c, s, h in (("feed", "c0", None, None), ("store", "c3", None, None),
                                    ("feed", "nobody", "ra1", "ra2"), ("feed", "c0", "zz", None))]
    params.append({**params[0], "pilot": "no-such-pilot"})
    params.append({**params[0], "token_hash": "0" * 64})
    with app.app_context():
        conn = db.session.connection()
        if conn.dialect.name == "postgresql":  # times come back in the session's zone unless converted
            conn.execute(text("SET LOCAL TIME ZONE 'America/New_York'"))
        on_driver = AssignmentDb(True, lambda stmt, params: fast_rows(conn, stmt, params))
        on_sqlalchemy = AssignmentDb(False, lambda stmt, params: [tuple(r) for r in conn.execute(stmt, params)])
        for p in params:
            args = (p["token_hash"], p["pilot"], p["customer"], p["store"], p["new_home"])
            assert read_context(on_driver, *args) == read_context(on_sqlalchemy, *args), p
        stored = read_context(on_driver, *(params[0][k] for k in ("token_hash", "pilot", "customer", "store")))
        assert stored.stored_variant is not None and stored.stored_at.utcoffset() == timedelta(0)


def test_a_ramp_of_the_weights_is_no_sample_ratio_mismatch(app, client, running, auth):
    """Weights changed while the stage runs: each period's units follow that period's weights. The
    χ² of the summary and of an analysis must expect exactly that (scipy on the raw assignment rows),
    not today's weights for every unit, which would cry mismatch at every ramp."""
    feed, before = auth("feed"), {"control": 0.7, "discount": 0.1, "tiers": 0.1, "bonus": 0.1}
    after = {"control": 0.1, "discount": 0.3, "tiers": 0.3, "bonus": 0.3}
    client.patch("/api/v1/pilots/p1/stages/1", json={"allocation": before}, headers=running)
    first = [assign(client, feed, f"c{i}").json for i in range(150)]
    client.patch("/api/v1/pilots/p1/stages/1", json={"allocation": after}, headers=running)
    second = [assign(client, feed, f"c{i}").json for i in range(150, 300)]
    assert sum(a["assigned"] for a in first) > 80 and sum(a["assigned"] for a in second) > 80
    log = client.get("/api/v1/pilots/p1", headers=running).json["stages"][0]["allocation_log"]
    assert [e["allocation"] for e in log] == [ALLOCATION, before]
    until = datetime.fromisoformat(log[-1]["until"])
    with app.app_context():
        rows = db.session.execute(select(Assignment.variant, Assignment.assigned_at)).all()
    keys = sorted(after)
    observed = [sum(v == k for v, _ in rows) for k in keys]
    early = sum(at < until for _, at in rows)
    expected = [early * before[k] + (len(rows) - early) * after[k] for k in keys]
    p = stats.chisquare(observed, expected).pvalue
    assert stats.chisquare(observed, [len(rows) * after[k] for k in keys]).pvalue < 1e-6  # today's weights alone
    summary = client.get("/api/v1/pilots/p1/assignments/summary", headers=running).json["stages"][0]
    assert summary["counts"] == dict(zip(keys, observed))
    assert summary["p_value"] == pytest.approx(p, rel=1e-9) and not summary["mismatch"]
    run = client.post("/api/v1/pilots/p1/analyses", json={}, headers=auth("analyst")).json
    srm = client.get(f"/api/v1/analyses/{run['id']}", headers=auth("analyst")).json["results"]["srm"]
    assert srm["weights_changed"] and srm["p_value"] == pytest.approx(p, rel=1e-9), srm
    assert srm["shares"] == pytest.approx({k: e / len(rows) for k, e in zip(keys, expected)}, rel=1e-12)
