"""The app factory, configuration, health checks and migrations."""
from sqlalchemy import inspect

from pilot import create_app
from pilot.db import db
from pilot.migrate import current_revision, head_revision


def test_config_comes_from_environment_and_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("PILOT_DATABASE_URL", f"sqlite:///{tmp_path}/env.db")
    monkeypatch.setenv("PILOT_SECRET_KEY", "from-env")
    monkeypatch.setenv("PILOT_INSTANCE_PATH", str(tmp_path / "inst"))
    app = create_app()
    assert app.config["DATABASE_URL"] == f"sqlite:///{tmp_path}/env.db"
    assert app.config["SECRET_KEY"] == "from-env"
    assert create_app({"TESTING": True}).testing


def test_default_is_sqlite_in_instance_folder_migrated_on_first_start(monkeypatch, tmp_path):
    monkeypatch.delenv("PILOT_DATABASE_URL", raising=False)
    monkeypatch.delenv("PILOT_SECRET_KEY", raising=False)
    monkeypatch.setenv("PILOT_INSTANCE_PATH", str(tmp_path))
    app = create_app()
    assert app.config["DATABASE_URL"] == f"sqlite:///{tmp_path}/pilot.db"
    with app.app_context():
        assert current_revision(db.engine) == head_revision(db.engine)
        assert "stores" in inspect(db.engine).get_table_names()
    secret = (tmp_path / "secret_key").read_text()
    assert len(secret) > 40 and create_app().config["SECRET_KEY"] == secret  # kept across restarts
    db_engine = app.extensions["pilot.db"][0]
    db_engine.dispose()


def test_healthz_and_readyz_need_no_auth(client):
    assert client.get("/healthz").json == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json["migration"] == ready.json["expected_migration"]


def test_readyz_fails_when_migrations_are_behind(tmp_path):
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/empty.db", "AUTO_MIGRATE": False})
    response = app.test_client().get("/readyz")
    assert response.status_code == 503 and response.json["migration"] is None
    app.extensions["pilot.db"][0].dispose()


def test_openapi_document_and_docs_are_served_locally(client):
    spec = client.get("/api/openapi.json").json
    assert spec["openapi"].startswith("3.")
    assert "/api/v1/stores/import" in spec["paths"]
    docs = client.get("/api/docs")
    assert docs.status_code == 200 and b"/api/docs/static/swagger-ui-bundle.js" in docs.data
    js = client.get("/api/docs/static/swagger-ui-bundle.js")
    assert js.status_code == 200 and b"SwaggerUIBundle" in js.data
    js.close()
