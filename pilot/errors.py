"""The domain's errors: what went wrong, in the domain's words, with a machine-readable code and details.

Domain modules raise these and know nothing of HTTP; `pilot.http_errors` is the one place that maps each
kind to its status and the shared JSON error shape (and the pages to their HTML error pages). The codes
and details are public: API clients read them.
"""
from __future__ import annotations

from typing import Any

import psycopg
from sqlalchemy import exc as sa_exc


class PilotError(Exception):
    """A request the domain refuses, or cannot serve now. `code` defaults to the kind's own code."""

    default_code = "error"

    def __init_subclass__(cls, code: str | None = None, **kwargs: Any) -> None:
        """A kind names its own code in its class statement: `class NotFound(PilotError, code="not_found")`."""
        super().__init_subclass__(**kwargs)
        if code is not None:
            cls.default_code = code

    def __init__(self, message: str, code: str | None = None, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.details = details or {}


class BadRequest(PilotError, code="bad_request"):
    """The request cannot be read: malformed, incomplete or not text."""


class Unauthenticated(PilotError, code="unauthorized"):
    """No live credential came with the request."""


class Forbidden(PilotError, code="forbidden"):
    """The caller may not do this (its role, or its store's scope)."""


class NotFound(PilotError, code="not_found"):
    """The thing named does not exist."""


class Conflict(PilotError, code="conflict"):
    """The request is valid but the current state refuses it (a started pilot, a key taken…)."""


class TooLarge(PilotError, code="payload_too_large"):
    """The input is over a configured limit."""


class Unsupported(PilotError, code="unsupported_media_type"):
    """The input comes in a form (media type, encoding) that is not accepted."""


class Invalid(PilotError, code="validation_error"):
    """The input was read but its values are wrong; `details` names the fields or rows."""


class TooManyRequests(PilotError, code="too_many_requests"):
    """Too many attempts in a while (sign-ins): wait, then try again."""


class Unavailable(PilotError, code="service_unavailable"):
    """A resource the request needs (the database) cannot be used now: try again."""


def database_unavailable(exc: BaseException) -> bool:
    """Whether an error says the database cannot be reached or used now (a 503: try again), not a bug."""
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.DisconnectionError, sa_exc.TimeoutError,
                        psycopg.OperationalError)):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated


# webargs nests a request's field errors under where they came from; the path is the field's own
LOCATIONS = frozenset({"json", "query", "querystring", "form", "json_or_form", "headers", "cookies", "files",
                       "view_args", "path"})


def field_paths(fields: Any) -> list[dict[str, str]]:
    """Field errors (marshmallow's nested messages, or dotted keys) as one list of paths in one shape:
    [{"path": "variants[1].parameters.rate", "message": "..."}] — list items by index in brackets,
    fields joined by dots, the request location (json, query…) left out."""
    out: list[dict[str, str]] = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(inner, _join(path, str(key)))
        elif isinstance(value, (list, tuple)):
            for item in value:
                if isinstance(item, (dict, list)):
                    walk(item, path)
                else:
                    out.append({"path": path, "message": str(item)})
        else:
            out.append({"path": path, "message": str(value)})

    if isinstance(fields, dict):
        for key, value in fields.items():
            walk(value, "" if str(key) in LOCATIONS and isinstance(value, dict) else _join("", str(key)))
    else:
        walk(fields, "")
    return out


def _join(path: str, key: str) -> str:
    for part in key.split("."):
        if part == "_schema":
            continue
        path = f"{path}[{part}]" if part.isdigit() else f"{path}.{part}" if path else part
    return path
