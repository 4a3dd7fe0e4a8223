"""One JSON error shape for every API failure: {"error": {status, code, message, details}}."""
from __future__ import annotations

import logging
from typing import Any

import psycopg
from flask import Flask, current_app, jsonify, request
from sqlalchemy import exc as sa_exc
from werkzeug.exceptions import HTTPException, InternalServerError

log = logging.getLogger(__name__)

CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 406: "not_acceptable", 409: "conflict", 413: "payload_too_large",
    415: "unsupported_media_type", 422: "validation_error", 429: "too_many_requests",
    500: "internal_error", 503: "service_unavailable",
}


class ApiError(HTTPException):
    """An API failure with a machine-readable code and optional details."""

    def __init__(self, status: int, message: str, code: str | None = None,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(description=message)
        self.code = status
        self.error_code = code or CODES.get(status, "error")
        self.details = details or {}


def error_payload(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> dict:
    """The error body every API failure shares."""
    return {"error": {"status": status, "code": code, "message": message, "details": _str_keys(details or {})}}


def _str_keys(value: Any) -> Any:
    """marshmallow keys list errors by int index: JSON object keys must be strings."""
    if isinstance(value, dict):
        return {str(k): _str_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_str_keys(v) for v in value]
    return value


def database_unavailable(exc: BaseException) -> bool:
    """Whether an error says the database cannot be reached or used now (a 503: try again), not a bug."""
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.DisconnectionError, sa_exc.TimeoutError,
                        psycopg.OperationalError)):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated


def _unavailable(exc: Exception) -> ApiError:
    log.warning("database unavailable on %s %s: %s", request.method, request.path, exc)
    return ApiError(503, "The database is unavailable; try again shortly.", code="database_unavailable",
                    details={"reason": str(exc)} if current_app.debug else None)


def to_response(exc: HTTPException):
    """Turn any HTTP exception (ours, Flask's or webargs') into the shared JSON shape."""
    status = exc.code or 500
    if isinstance(exc, ApiError):
        return jsonify(error_payload(status, exc.error_code, exc.description, exc.details)), status
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


def register(app: Flask) -> None:
    """JSON errors under /api and the health checks; HTML elsewhere."""

    def handle(exc: Exception):
        if not isinstance(exc, HTTPException) and database_unavailable(exc):
            exc = _unavailable(exc)
        if not isinstance(exc, HTTPException):
            log.exception("unhandled error on %s %s", request.method, request.path)
            if current_app.debug:
                raise exc
            exc = InternalServerError()
        if _wants_json():
            return to_response(exc)
        return exc

    app.register_error_handler(HTTPException, handle)
    app.register_error_handler(Exception, handle)


def _wants_json() -> bool:
    return request.path.startswith(("/api/", "/healthz", "/readyz"))
