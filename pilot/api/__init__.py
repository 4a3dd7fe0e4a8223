"""The JSON API under /api/v1: one module per resource, registered from one list."""
from __future__ import annotations

import marshmallow as ma
import swagger_ui_bundle
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask, request, send_from_directory

from pilot.api import (
    analyses,
    analysis_runs,
    approvals,
    assignments,
    audit,
    customer_groups,
    customers,
    data_quality,
    events,
    governance,
    ingestion_batches,
    jobs,
    me,
    metrics,
    pilots,
    plans,
    programmes,
    regions,
    stores,
    tokens,
    transactions,
    users,
    webhooks,
)
from pilot.api.base import Api
from pilot.api.bodies import request_data
from pilot.errors import BadRequest

BLUEPRINTS = [me.blp, tokens.blp, audit.blp, regions.blp, stores.blp, customers.blp, customer_groups.blp,
              programmes.blp, metrics.blp, pilots.blp, plans.blp, assignments.blp,
              transactions.blp, events.blp, ingestion_batches.blp, data_quality.blp,
              analyses.blp, analysis_runs.blp, jobs.blp, governance.blp, approvals.blp,
              users.blp, webhooks.blp]

api = Api()


def schema_name(schema: type[ma.Schema] | ma.Schema) -> str:
    """OpenAPI component names: the class name, with 'Patch' for partial (PATCH) variants."""
    cls = schema if isinstance(schema, type) else type(schema)
    name = cls.__name__.removesuffix("Schema")
    return name + "Patch" if getattr(schema, "partial", False) else name


def init_app(app: Flask) -> None:
    """Register every API blueprint and the bearer-token security scheme, and put the fast assignment
    path in front of the app (pilot.api.fast_assignment: the app factory adds only the input guard after it)."""
    from pilot.api import fast_assignment
    plugin = MarshmallowPlugin(schema_name_resolver=schema_name)
    api.init_app(app, spec_kwargs={"servers": [{"url": "/"}], "marshmallow_plugin": plugin})
    api.spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    api.spec.options["security"] = [{"bearer": []}]
    for blueprint in BLUEPRINTS:
        api.register_blueprint(blueprint, url_prefix="/api/v1" + blueprint.url_prefix)

    @app.before_request
    def _read_json_body() -> None:
        if request.path.startswith("/api/v1/") and request.method in ("POST", "PUT", "PATCH") and request.is_json:
            if not request_data():  # complete (or a 400) and within the limit (or a 413)
                raise BadRequest("The request body is empty; send a JSON document.", code="empty_body")

    @app.get("/api/docs/static/<path:filename>")
    def swagger_ui_static(filename: str):
        """Swagger UI's files, served locally: installations often have no internet."""
        return send_from_directory(swagger_ui_bundle.swagger_ui_path, filename)

    fast_assignment.init_app(app)
