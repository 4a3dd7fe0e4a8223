"""Pilot: staged pilot rollouts and A/B experiments of retail loyalty programmes."""
from __future__ import annotations

import os
from typing import Any

from flask import Flask

from pilot.config import Config
from pilot.db import db


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the app: settings from PILOT_* variables, overridden by `config`."""
    app = Flask(__name__, instance_path=os.environ.get("PILOT_INSTANCE_PATH") or None,
                instance_relative_config=True)
    os.makedirs(app.instance_path, exist_ok=True)
    app.config.from_mapping(Config(app.instance_path).as_dict())
    app.config.update(config or {})
    db.init_app(app)

    from pilot import api, auth, health, http_errors, inputs, logs, pages
    logs.install_root()  # the app's error lines name request paths: written escaped under any server
    http_errors.register(app)
    auth.init_app(app)
    api.init_app(app)
    health.init_app(app)
    pages.init_app(app)
    inputs.init_app(app)  # last: the input guard is the outermost middleware, before the fast assignment path (api)
    if app.config["AUTO_MIGRATE"]:
        from pilot.migrate import upgrade
        with app.app_context():
            upgrade(db.engine)
            db.engine.dispose()
    return app
