"""Start and advance through the API with `assign`: the (new) scope's eligible customers are assigned in
the background, as the pages do, and the progress endpoint says when it is done."""
import time

from sqlalchemy import func, select

from pilot.db import db
from pilot.models import Assignment, Customer, Store
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
    from pilot.models import Region
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Customer).join(Store, Store.id == Customer.home_store_id)
                                 .join(Region, Region.id == Store.region_id).where(Region.code.in_(regions)))


def test_start_and_advance_with_assign_assign_the_new_scope_in_the_background(client, world, auth, app):
    customers = [{"external_id": f"c{i}", "home_store": f"r{'abc'[i % 3]}{i % 8}"} for i in range(90)]
    assert client.post("/api/v1/customers", json={"customers": customers}, headers=auth("feed")).status_code == 200
    assert client.post("/api/v1/pilots", json=pilot_body(), headers=world).status_code == 201
    assert client.get("/api/v1/pilots/p1/assignments/progress", headers=world).json == {"status": None}
    assert act(client, world, "p1", "start", assign=True).status_code == 200
    first = _wait(client, world, 1)
    assert first["status"] == "done" and first["assigned_in_stage"] == _in_scope(app, ["ra", "rb"]) == 60
    assert act(client, world, "p1", "advance", assign=True, override=True, reason="test").status_code == 200
    second = _wait(client, world, 2)
    assert second["status"] == "done" and second["assigned_in_stage"] == _in_scope(app, ["rc"]) == 30
    with app.app_context():  # every customer in the final scope holds one assignment
        assert db.session.scalar(select(func.count()).select_from(Assignment)) == _in_scope(app, ["ra", "rb", "rc"])
    assert client.get("/api/v1/pilots/p1/assignments/progress", headers=auth("store")).status_code == 403


def test_without_assign_nothing_is_assigned_in_the_background(client, world, auth, app):
    customers = [{"external_id": f"c{i}", "home_store": f"ra{i % 8}"} for i in range(10)]
    assert client.post("/api/v1/customers", json={"customers": customers}, headers=auth("feed")).status_code == 200
    assert client.post("/api/v1/pilots", json=pilot_body(), headers=world).status_code == 201
    assert act(client, world, "p1", "start").status_code == 200
    assert client.get("/api/v1/pilots/p1/assignments/progress", headers=world).json == {"status": None}
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Assignment)) == 0
