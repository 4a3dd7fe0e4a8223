"""Several processes assigning the same customers at once: one stored row each, one answer."""
import importlib
import multiprocessing as mp

import pytest
from sqlalchemy import func, select, text

from pilot.db import db, make_engine
from pilot.models import Assignment, Customer, LayerMembership

WORKERS = 6


def _worker(url, secret, customers, barrier, out, lean):
    from pilot import create_app
    app = create_app({"DATABASE_URL": url, "AUTO_MIGRATE": False, "TESTING": True, "TILL_LEAN_PATH": lean})
    client = app.test_client()
    barrier.wait()
    answers, fast = {}, 0
    for c in customers:
        body = {"customer": c}
        if c.startswith("walk-in"):  # unknown: created by whichever process comes first
            body.update(store="ra1", new_customer={"home_store": "ra1", "age_band": "35-44"})
        r = client.post("/api/v1/pilots/p1/assignments", json=body, headers={"Authorization": f"Bearer {secret}"})
        answers[c] = (r.status_code, (r.json.get("variant") or {}).get("key"))
        fast += r.headers.get("X-Pilot-Path") == "fast"
    out.put((answers, fast))


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "view"])
def test_concurrent_processes_store_one_row_and_agree(app, backend, running, tokens, lean):
    """Six processes assign the same customers (some to be created) at once, through the lean till
    path (pilot.api.fast_assignment) or the app's view."""
    if backend[0] != "postgresql":
        pytest.skip("races are checked against PostgreSQL (set PILOT_TEST_DATABASE_URL)")
    customers = [f"c{i}" for i in range(0, 60, 3)]  # home stores in region ra, enrolled
    customers += [f"walk-in-{i}" for i in range(20)]
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(WORKERS), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(app.config["DATABASE_URL"], tokens["feed"],
                                                 customers[::-1] if i % 2 else customers, barrier, out, lean))
             for i in range(WORKERS)]
    for p in procs:
        p.start()
    results, answered = zip(*[out.get(timeout=120) for _ in procs])
    assert (sum(answered) > 0) == lean
    for p in procs:
        p.join(timeout=60)
    for c in customers:
        answers = {r[c] for r in results}
        assert len(answers) == 1 and next(iter(answers))[0] == 200 and next(iter(answers))[1], (c, answers)
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Assignment)) == len(customers)
        assert db.session.scalar(select(func.count()).select_from(LayerMembership)) == len(customers)
        assert db.session.scalar(select(func.count()).select_from(Customer)
                                 .where(Customer.external_id.like("walk-in-%"))) == 20


def test_a_dropped_connection_is_replaced_after_idle(app, backend, client, running, auth, monkeypatch):
    """The pool pings a connection that sat idle before handing it out, so a database restart (here:
    every connection of the app killed) costs no failed request."""
    if backend[0] != "postgresql":
        pytest.skip("connection loss is checked against PostgreSQL (set PILOT_TEST_DATABASE_URL)")
    db_module = importlib.import_module("pilot.db")  # (the package's attribute `pilot.db` is the extension)
    assert client.post("/api/v1/pilots/p1/assignments", json={"customer": "c0"}, headers=auth("feed")).status_code == 200
    with app.app_context():
        pids = {row[0] for row in db.session.execute(text("SELECT pg_backend_pid()"))}
        db.session.close()
    monkeypatch.setattr(db_module, "PING_AFTER_IDLE_SECONDS", 0.0)
    assert pids and _kill_app_connections(app)
    for c in ("c0", "c3"):
        r = client.post("/api/v1/pilots/p1/assignments", json={"customer": c}, headers=auth("feed"))
        assert r.status_code == 200 and r.json["assigned"], r.json


def test_a_connection_dropped_under_the_till_costs_one_request(app, backend, client, running, auth,
                                                               monkeypatch):
    """The view runs the till's statements on the driver (pilot.driver.fast_rows); a connection lost there
    must leave the pool as SQLAlchemy would make it: that request fails, the next one gets a new one."""
    if backend[0] != "postgresql":
        pytest.skip("connection loss is checked against PostgreSQL (set PILOT_TEST_DATABASE_URL)")
    app.config["TILL_LEAN_PATH"] = False  # the view's own handling (the lean path's is the next test)
    db_module = importlib.import_module("pilot.db")
    monkeypatch.setattr(db_module, "PING_AFTER_IDLE_SECONDS", 1e9)  # a busy pool: no ping at checkout
    for c in ("c0", "c3"):  # the token is now known: the till's statement is the request's first
        assert client.post("/api/v1/pilots/p1/assignments", json={"customer": c}, headers=auth("feed")).status_code == 200
    assert _kill_app_connections(app)
    lost = client.post("/api/v1/pilots/p1/assignments", json={"customer": "c6"}, headers=auth("feed"))
    assert lost.status_code == 503 and lost.json["error"]["code"] == "database_unavailable"
    for c in ("c6", "c9"):
        r = client.post("/api/v1/pilots/p1/assignments", json={"customer": c}, headers=auth("feed"))
        assert r.status_code == 200 and r.json["assigned"], r.json


def test_a_connection_dropped_under_the_lean_till_costs_no_request(app, backend, client, running, auth,
                                                                   monkeypatch):
    """The lean till path (pilot.api.fast_assignment) drops a connection it finds lost from the pool and hands the
    request on to the app, which answers it on a new connection: no request fails."""
    if backend[0] != "postgresql":
        pytest.skip("connection loss is checked against PostgreSQL (set PILOT_TEST_DATABASE_URL)")
    db_module = importlib.import_module("pilot.db")
    monkeypatch.setattr(db_module, "PING_AFTER_IDLE_SECONDS", 1e9)  # a busy pool: no ping at checkout
    paths = []
    for c in ("c0", "c3"):
        r = client.post("/api/v1/pilots/p1/assignments", json={"customer": c}, headers=auth("feed"))
        assert r.status_code == 200
        paths.append(r.headers.get("X-Pilot-Path"))
    assert paths == ["fast", "fast"] and _kill_app_connections(app)
    for c in ("c6", "c9"):
        r = client.post("/api/v1/pilots/p1/assignments", json={"customer": c}, headers=auth("feed"))
        assert r.status_code == 200 and r.json["assigned"], r.json
        paths.append(r.headers.get("X-Pilot-Path"))
    assert paths[2:] == [None, "fast"]  # c6 was the app's; c9 the lean path's again, on a new connection


def _kill_app_connections(app) -> list:
    """Terminate every connection of the app's pool (as a database restart would); the rows killed."""
    admin = make_engine(app.config["DATABASE_URL"])
    with admin.connect() as conn:
        killed = conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                   "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                                   "AND application_name = ''")).all()
    admin.dispose()
    return killed
