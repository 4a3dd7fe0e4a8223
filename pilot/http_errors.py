"""The one place errors become HTTP: each domain error kind's status, and one JSON error shape for every
API failure — {"error": {status, code, message, details}} — beside HTML error pages for the pages."""
from __future__ import annotations

import logging
from typing import Any

from flask import Flask, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, InternalServerError, default_exceptions

from pilot.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    PilotError,
    TooLarge,
    TooManyRequests,
    Unauthenticated,
    Unavailable,
    Unsupported,
    database_unavailable,
    field_paths,
)

log = logging.getLogger(__name__)

STATUS: dict[type[PilotError], int] = {
    BadRequest: 400, Unauthenticated: 401, Forbidden: 403, NotFound: 404, Conflict: 409, TooLarge: 413,
    Unsupported: 415, Invalid: 422, TooManyRequests: 429, Unavailable: 503,
}

# The code of an HTTP error that is no domain error (Flask's, webargs'): the domain kind's of its status
CODES = {status: kind.default_code for kind, status in STATUS.items()} | {
    405: "method_not_allowed", 406: "not_acceptable", 500: "internal_error"}


def status_of(exc: PilotError) -> int:
    """The HTTP status of a domain error (its nearest kind's)."""
    for kind in type(exc).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 400


def error_payload(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> dict:
    """The error body every API failure shares; field errors (`details.fields`, in the shape each check
    gave them) come also as one list of paths, `details.errors` (pilot.errors.field_paths)."""
    details = _str_keys(details or {})
    if "fields" in details and "errors" not in details:
        details["errors"] = field_paths(details["fields"])
    return {"error": {"status": status, "code": code, "message": message, "details": details}}


def _str_keys(value: Any) -> Any:
    """marshmallow keys list errors by int index: JSON object keys must be strings."""
    if isinstance(value, dict):
        return {str(k): _str_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_str_keys(v) for v in value]
    return value


def _unavailable(exc: Exception) -> Unavailable:
    log.warning("database unavailable on %s %s: %s", request.method, request.path, exc)
    return Unavailable("The database is unavailable; try again shortly.", code="database_unavailable",
                       details={"reason": str(exc)} if current_app.debug else None)


def to_response(exc: HTTPException | PilotError):
    """Turn a domain error or any HTTP exception (Flask's or webargs') into the shared JSON shape."""
    if isinstance(exc, PilotError):
        status = status_of(exc)
        return jsonify(error_payload(status, exc.code, exc.message, exc.details)), status
    status = exc.code or 500
    data = getattr(exc, "data", None) or {}
    messages = data.get("messages") or data.get("errors")
    code, message, details = CODES.get(status, "error"), exc.description or exc.name, {}
    if status == 422 and messages:
        message, details = "Request validation failed.", {"fields": messages}
    elif status == 400 and messages:
        code, message = "malformed_json", "Request body is not valid JSON."
    elif status == 413:
        limit = request.max_content_length if request else current_app.config.get("MAX_CONTENT_LENGTH")
        message = f"Request body exceeds the limit of {limit} bytes."
        details = {"limit_bytes": limit}
    elif status == 500:
        message = "Internal server error."
    return jsonify(error_payload(status, code, message, details)), status


def as_http(exc: PilotError) -> HTTPException:
    """A domain error as werkzeug's exception of its status (for the HTML pages)."""
    return default_exceptions[status_of(exc)](description=exc.message)


def respond(exc: Exception):
    """The answer to any error of a request: JSON under /api and the health checks, else the pages'
    HTML error page (in their layout) where the pages registered one."""
    if not isinstance(exc, (HTTPException, PilotError)) and database_unavailable(exc):
        exc = _unavailable(exc)
    if not isinstance(exc, (HTTPException, PilotError)):
        log.exception("unhandled error on %s %s", request.method, request.path)
        if current_app.debug:
            raise exc
        exc = InternalServerError()
    if _wants_json():
        return to_response(exc)
    exc = as_http(exc) if isinstance(exc, PilotError) else exc
    page = current_app.extensions.get("pilot.error_page")
    return page(exc) if page is not None and (exc.code or 500) >= 400 else exc


def register(app: Flask) -> None:
    """JSON errors under /api and the health checks; HTML elsewhere."""
    app.register_error_handler(HTTPException, respond)
    app.register_error_handler(Exception, respond)


def _wants_json() -> bool:
    return request.path.startswith(("/api/", "/healthz", "/readyz"))
