"""Every database test runs on SQLite, and on PostgreSQL when PILOT_TEST_DATABASE_URL is set.

PostgreSQL tests run in a schema of their own (dropped at the end), so the `test` database is
left as it was found; each test starts from empty tables.
"""
from __future__ import annotations

import os
import shutil
import threading
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text

from pilot import create_app
from pilot.auth import issue_token
from pilot.db import db, make_engine
from pilot.migrate import upgrade
from pilot.models import Base, Region, Store
from tests.factories import CHROMIUM, PROGRAMME, act, pilot_body

PG_URL = os.environ.get("PILOT_TEST_DATABASE_URL")
BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])
ROLES = ("admin", "manager", "analyst", "store", "feed")


def _pg_url(schema: str) -> str:
    base = PG_URL.replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request, tmp_path_factory):
    """A migrated template database per backend: (kind, url or template path)."""
    if request.param == "sqlite":
        template = tmp_path_factory.mktemp("template") / "template.db"
        engine = make_engine(f"sqlite:///{template}")
        upgrade(engine)
        engine.dispose()
        yield "sqlite", template
        return
    schema = f"pilot_test_{uuid.uuid4().hex[:10]}"
    admin = make_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    url = _pg_url(schema)
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    yield "postgresql", url
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@pytest.fixture
def database_url(backend, tmp_path):
    """A fresh, migrated database for one test."""
    kind, where = backend
    if kind == "sqlite":
        path = tmp_path / "pilot.db"
        shutil.copy(where, path)
        yield f"sqlite:///{path}"
        return
    yield where
    engine = make_engine(where)
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture
def app(database_url, tmp_path):
    app = create_app({"TESTING": True, "DATABASE_URL": database_url, "AUTO_MIGRATE": False,
                      "SECRET_KEY": "test-secret"})
    yield app
    for thread in threading.enumerate():  # background assignments and analyses end before the engine and tables go
        if thread.name.startswith(("bulk_assignment-", "analysis-")):
            thread.join(60)
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def tokens(app):
    """One live token per role; the store token belongs to store T001 (region r1)."""
    with app.app_context():
        region = Region(code="r1", name="Region one")
        stores = [Store(code=c, name=f"Store {c}", region=region) for c in ("T001", "T002")]
        db.session.add_all([region, *stores])
        secrets = {role: issue_token(db.session, f"{role} test", role, stores[0] if role == "store" else None)[1]
                   for role in ROLES}
        db.session.commit()
    return secrets


@pytest.fixture
def auth(tokens):
    """Headers for a role: auth('manager')."""
    return lambda role: {"Authorization": f"Bearer {tokens[role]}"}


@pytest.fixture
def admin(auth):
    return auth("admin")


@pytest.fixture
def world(client, auth):
    """Regions ra, rb and rc with eight stores each, and the loyalty programme: the manager's headers."""
    m = auth("manager")
    for r in ("ra", "rb", "rc"):
        assert client.post("/api/v1/regions", json={"code": r, "name": r.upper()}, headers=m).status_code == 201
    stores = [{"code": f"{r}{i}", "name": f"{r} {i}", "region": r, "size_sqm": 500 + 137 * i}
              for r in ("ra", "rb", "rc") for i in range(8)]
    assert client.post("/api/v1/stores/import", json={"stores": stores}, headers=m).status_code == 200
    assert client.post("/api/v1/programmes", json=PROGRAMME, headers=m).status_code == 201
    return m


@pytest.fixture
def running(client, world, auth):
    """A running customer-level pilot over regions ra and rb, with 300 customers in ra, rb and rc."""
    customers = [{"external_id": f"c{i}", "home_store": f"{'abc'[i % 3].join(['r', ''])}{i % 8}",
                  "age_band": ["25-34", "65+"][i % 2], "children": i % 3, "household_size": 1 + i % 3}
                 for i in range(300)]
    assert client.post("/api/v1/customers", json={"customers": customers}, headers=auth("feed")).status_code == 200
    for g in ({"key": "seniors", "name": "Seniors", "rules": [{"attribute": "age_band", "op": "eq", "value": "65+"}]},):
        client.post("/api/v1/customer-groups", json=g, headers=world)
    client.post("/api/v1/pilots", json=pilot_body(), headers=world)
    act(client, world, "p1", "start", assign=False)  # its tests assign customers themselves
    return world


def pytest_configure(config):
    Path("test-artifacts").mkdir(exist_ok=True)


@pytest.fixture
def live_server(database_url, tmp_path):
    """Start a real gunicorn (tests/live.py) against this test's database: live_server(env=..., args=...)."""
    from tests.live import LiveServer
    servers = []

    def start(env: dict[str, str] | None = None, args: list[str] | None = None) -> LiveServer:
        servers.append(LiveServer(database_url, tmp_path, env, args))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()




@pytest.fixture
def browser():
    """Playwright driving Debian's chromium (skipped, with the reason shown, where none is installed)."""
    if not CHROMIUM:
        pytest.skip("no Chromium found: install Debian's chromium package (`apt-get install chromium`)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()
