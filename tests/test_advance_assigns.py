"""Start and advance through the API finish the job: a customer pilot's (newly enrolled) scope is assigned in
the background by default, as the pages do, and the progress endpoint says when it is done; `assign: false`
opts out; a store pilot has nothing to assign in bulk."""
import time

from sqlalchemy import func, select

from pilot.db import db
from pilot.models import Assignment, Customer, JobRun, Region, Store
from tests.factories import act, pilot_body


def _wait(client, headers, stage):
    for _ in range(400):
        progress = client.get("/api/v1/pilots/p1/assignments/progress", headers=headers).json
        if progress["status"] in ("done", "failed") and progress["stage"] == stage:
            return progress
        time.sleep(0.05)
    raise AssertionError(progress)


def _in_scope(app, regions):
    """The customers whose home store is in the regions (the pilot has no eligible groups): from the rows."""
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Customer).join(Store, Store.id == Customer.home_store_id)
                                 .join(Region, Region.id == Store.region_id).where(Region.code.in_(regions)))


def _assigned(app, stage=None):
    with app.app_context():
        stmt = select(func.count()).select_from(Assignment)
        return db.session.scalar(stmt if stage is None else stmt.where(Assignment.stage == stage))


def _customers(client, auth, n, regions="abc"):
    customers = [{"external_id": f"c{i}", "home_store": f"r{regions[i % len(regions)]}{i % 8}"} for i in range(n)]
    assert client.post("/api/v1/customers", json={"customers": customers}, headers=auth("feed")).status_code == 200


def test_start_and_advance_assign_the_new_scope_in_the_background_by_default(client, world, auth, app):
    _customers(client, auth, 90)
    assert client.post("/api/v1/pilots", json=pilot_body(), headers=world).status_code == 201
    assert client.get("/api/v1/pilots/p1/assignments/progress", headers=world).json == {"status": None}
    assert act(client, world, "p1", "start").status_code == 200
    first = _wait(client, world, 1)
    assert first["status"] == "done" and first["assigned_in_stage"] == _in_scope(app, ["ra", "rb"]) == 60
    assert first["assigned_now"] == 60 == _assigned(app, 1)
    assert act(client, world, "p1", "advance", override=True, reason="test").status_code == 200
    second = _wait(client, world, 2)
    assert second["status"] == "done" and second["assigned_in_stage"] == _in_scope(app, ["rc"]) == 30
    assert second["assigned_now"] == 30 == _assigned(app, 2)
    assert _assigned(app) == _in_scope(app, ["ra", "rb", "rc"])  # every customer of the final scope, once
    assert client.get("/api/v1/pilots/p1/assignments/progress", headers=auth("store")).status_code == 403


def test_assign_true_is_still_accepted(client, world, auth, app):
    _customers(client, auth, 30, "a")
    assert client.post("/api/v1/pilots", json=pilot_body(), headers=world).status_code == 201
    assert act(client, world, "p1", "start", assign=True).status_code == 200
    assert _wait(client, world, 1)["assigned_in_stage"] == _in_scope(app, ["ra"]) == 30


def test_assign_false_opts_out_on_start_and_advance(client, world, auth, app):
    _customers(client, auth, 30)
    assert client.post("/api/v1/pilots", json=pilot_body(), headers=world).status_code == 201
    assert act(client, world, "p1", "start", assign=False).status_code == 200
    assert act(client, world, "p1", "advance", assign=False, override=True, reason="test").status_code == 200
    assert client.get("/api/v1/pilots/p1/assignments/progress", headers=world).json == {"status": None}
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(JobRun)) == 0
    assert _assigned(app) == 0
    bad = act(client, world, "p1", "advance", assign="sometimes")
    assert bad.status_code == 422 and "assign" in bad.json["error"]["details"]["fields"]["json"]


def test_a_store_pilot_starts_without_a_bulk_run(client, world, auth, app):
    _customers(client, auth, 30)
    body = pilot_body(unit="store")
    assert client.post("/api/v1/pilots", json=body, headers=world).status_code == 201
    started = act(client, world, "p1", "start")
    assert started.status_code == 200 and started.json["state"] == "running"
    assert client.get("/api/v1/pilots/p1/assignments/progress", headers=world).json == {"status": None}
    assert _assigned(app) == 0
