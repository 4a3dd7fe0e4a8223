"""Liveness and readiness checks, without auth."""
from flask import Flask, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from pilot.db import db
from pilot.migrate import current_revision, head_revision


def init_app(app: Flask) -> None:
    """Add /healthz (process up) and /readyz (database reachable, migrations current)."""

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok")

    @app.get("/readyz")
    def readyz():
        try:
            with db.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            current, head = current_revision(db.engine), head_revision(db.engine)
        except SQLAlchemyError:
            return jsonify(status="unavailable", database="unreachable"), 503
        ready = current == head
        body = {"status": "ok" if ready else "unavailable", "database": "ok",
                "migration": current, "expected_migration": head}
        return jsonify(body), 200 if ready else 503
