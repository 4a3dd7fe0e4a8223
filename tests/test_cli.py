"""The `pilot` command: tokens, demo data, migrations, roles."""
import re

import pytest
from sqlalchemy import func, select

from pilot import create_app
from pilot.cli import cli
from pilot.db import db
from pilot.migrate import head_revision
from pilot.models import (
    AnalysisRun,
    Assignment,
    AuditEvent,
    Customer,
    CustomerGroup,
    Region,
    Store,
    Transaction,
    WebSession,
)
from tests.factories import login


def run(app, *args):
    result = app.test_cli_runner().invoke(cli, list(args))
    return result


def test_tokens_create_list_revoke(app, client, tokens):
    out = run(app, "tokens", "create", "--role", "store", "--name", "till 1", "--store", "T002")
    assert out.exit_code == 0, out.output
    secret = out.output.strip().splitlines()[-1]
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"}).json
    assert me == {"name": "till 1", "role": "store", "store": "T002"}
    listing = run(app, "tokens", "list").output
    assert "till 1" in listing and secret not in listing
    token_id = re.search(r"token (\d+)", out.output).group(1)
    login(client, secret)  # a web session on the token, to be ended with it
    assert client.get("/store").status_code == 200
    assert run(app, "tokens", "revoke", token_id).exit_code == 0
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"}).status_code == 401
    assert client.get("/store").status_code == 302  # its page session ended too: back to the login
    with app.app_context():  # as the API revokes: audited with before and after, its sessions ended
        event = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "revoke")).one()
        assert event.actor == "cli" and event.before["revoked_at"] is None and event.after["revoked_at"]
        assert db.session.scalars(select(WebSession.ended_at)).all() != [None]
    assert run(app, "tokens", "revoke", token_id).exit_code == 0  # again: nothing more happens
    with app.app_context():
        assert db.session.scalar(select(func.count()).where(AuditEvent.action == "revoke")) == 1
    assert run(app, "tokens", "create", "--role", "store", "--name", "x").exit_code == 2
    assert run(app, "tokens", "revoke", "9999").exit_code == 2


def test_demo_loads_once_and_its_token_works(app, client):
    first = run(app, "demo", "--customers", "400")
    assert first.exit_code == 0, first.output
    secret = re.search(r"(plt_\S+)", first.output).group(1)
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"}).json["role"] == "admin"
    with app.app_context():
        count = lambda m: db.session.scalar(select(func.count()).select_from(m))  # noqa: E731
        assert (count(Region), count(Store), count(Customer), count(CustomerGroup)) == (5, 60, 400, 4)
    second = run(app, "demo", "--customers", "400")
    assert "reusing" in second.output and "plt_" not in second.output
    pilot = client.get("/api/v1/pilots/card-pilot", headers={"Authorization": f"Bearer {secret}"}).json
    assert pilot["state"] == "running" and pilot["current_stage"] == 1 and len(pilot["stages"]) == 2
    assert [v["mechanic"] for v in client.get("/api/v1/programmes/card2027", headers={
        "Authorization": f"Bearer {secret}"}).json["variants"]] == ["control", "fixed_discount", "tiered",
                                                                     "cumulative_bonus"]
    counts = client.post("/api/v1/customer-groups/preview", json={},
                         headers={"Authorization": f"Bearer {secret}"}).json["counts"]
    assert all(counts[k] > 0 for k in ("young_parents", "families", "seniors", "singles", "other"))


def test_db_upgrade_is_idempotent(app):
    out = run(app, "db", "upgrade")
    with app.app_context():
        head = head_revision(db.engine)
    assert out.exit_code == 0 and f"revision {head}" in out.output and head is not None


def test_the_demo_is_the_same_wherever_it_is_loaded(app, tmp_path):
    """Same seed, same demo: assignments (the pilot's salt comes from the seed), transactions, the
    analysis and its recommendation; here the fixture's database against a fresh SQLite one."""
    other = create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/other.db", "TESTING": True})

    def demo(a):
        assert run(a, "demo", "--customers", "400").exit_code == 0
        with a.app_context():
            assigned = db.session.execute(select(Customer.external_id, Assignment.variant)
                                          .join(Assignment, Assignment.customer_id == Customer.id)).all()
            spend = db.session.scalar(select(func.sum(Transaction.amount)))
            run_ = db.session.scalars(select(AnalysisRun)).one()
            return sorted(assigned), float(spend), run_.decision, run_.results["metrics"]

    here, there = demo(app), demo(other)
    with other.app_context():
        db.engine.dispose()
    assert len(here[0]) > 100 and here[0] == there[0]  # the north and south customers
    assert here[1] == pytest.approx(there[1], rel=1e-12)
    assert here[2] == there[2]
    assert here[3] and _rounded(here[3]) == _rounded(there[3])


def _rounded(value):
    """Result tables compared to 9 significant digits (the two databases sum floats in their own order)."""
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return float(f"{value:.9g}") if isinstance(value, float) else value
