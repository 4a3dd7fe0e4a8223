"""What any request's input must be before code reads it: clean text in the path and query, JSON
bodies nested at most MAX_DEPTH levels.

Both were 500s found on PostgreSQL: its text cannot hold NUL, so a NUL reaching a query (`GET
/stores/S%00`) was a database error, and invalid UTF-8 was read as U+FFFD and stored so. Deep JSON
(`[[[[…`, ~1,000 levels) exhausted the stack in the JSON decoder or in the code walking the value.
`InputGuard` is the outermost WSGI middleware, so the lean till path (pilot.api.fast_assignment) and every route
see only clean path and query text; `check_depth` runs before every JSON body is decoded (the app's
JSON provider, the API's argument parser, the lean till path).
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote_to_bytes

import numpy as np
from flask import Flask
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import BadRequest as HttpBadRequest

from pilot.errors import BadRequest
from pilot.http_errors import error_payload

MAX_DEPTH = 64

# where answers are JSON (as pilot.errors answers them) and where every parameter is an identifier,
# a number, a date or a cursor, so no control character is ever meant
API_PREFIX = "/api/"
JSON_PREFIXES = (API_PREFIX, "/healthz", "/readyz")
_CONTROL = re.compile("[\x01-\x1f\x7f]")
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)}


def text_problem(raw: bytes, controls: bool) -> str | None:
    """Why percent-decoded path or query bytes are not acceptable text, or None."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "Must be valid UTF-8."
    if "\x00" in text:
        return "Must not contain NUL characters."
    if controls and _CONTROL.search(text):
        return "Must not contain control characters."
    return None


def _wsgi_bytes(value: str) -> bytes:
    """The bytes a WSGI string carries (PEP 3333: latin-1), or its UTF-8 when a server gave text."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape")


def _query_pairs(query: bytes) -> Iterable[tuple[bytes, bytes]]:
    """Names and values of a query string, percent-decoded to bytes, split as Werkzeug splits them."""
    for part in filter(None, query.split(b"&")):
        name, _, value = part.partition(b"=")
        yield unquote_to_bytes(name.replace(b"+", b" ")), unquote_to_bytes(value.replace(b"+", b" "))


def shown(raw: bytes) -> str:
    """A parameter name fit to show in an answer: bad bytes and control characters escaped."""
    return raw.decode("utf-8", "backslashreplace").translate(_ESCAPES)


def request_problem(environ: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The message and field details refusing a request's path or query text, or None."""
    path = environ.get("PATH_INFO", "")
    controls = path.startswith(API_PREFIX)
    rule = "UTF-8 text without NUL or control characters" if controls else "UTF-8 text without NUL characters"
    problem = text_problem(_wsgi_bytes(path), controls)
    if problem:
        return f"The path must be {rule}.", {"fields": {"path": [problem]}}
    for name, value in _query_pairs(_wsgi_bytes(environ.get("QUERY_STRING", ""))):
        problem = text_problem(name, controls) or text_problem(value, controls)
        if problem:
            key = shown(name)
            return f"Query parameter {key!r} must be {rule}.", {"fields": {"query": {key: [problem]}}}
    return None


class InputGuard:
    """WSGI middleware answering 400 `invalid_text` to a request whose path or query is not clean
    text (module doc): strict UTF-8 and no NUL anywhere, and no control character under /api/.
    Pages keep other control characters to themselves (a login's `next` is checked as a path)."""

    def __init__(self, app: Flask, wsgi_app: Callable) -> None:
        self.app, self.wsgi_app = app, wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        refused = request_problem(environ)
        if refused is None:
            return self.wsgi_app(environ, start_response)
        message, details = refused
        if environ.get("PATH_INFO", "").startswith(JSON_PREFIXES):
            response = self.app.json.response(error_payload(400, "invalid_text", message, details))
            response.status_code = 400
        else:
            response = HttpBadRequest(message).get_response(environ)
        return response(environ, start_response)


# Outside its strings a JSON text's depth is all in its brackets. Escaped backslashes, then escaped
# quotes, are dropped first (a run of backslashes escapes a quote when it is odd); then all but
# quotes and brackets (UTF-8 never uses an ASCII byte inside a character): a bracket after an odd
# number of quotes is inside a string.
_NOT_KEPT = bytes(b for b in range(256) if b not in b'"[]{}')
_QUOTE = ord('"')
_STEP = np.zeros(256, np.int8)
_STEP[list(b"[{")] = 1
_STEP[list(b"]}")] = -1


def json_depth(raw: bytes) -> int:
    """How deep the arrays and objects of a UTF-8 JSON text nest, found without decoding it. Of text
    that is malformed or cut short, as deep as it goes: never less than a decoder gets before failing."""
    codes = np.frombuffer(raw.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_KEPT), np.uint8)
    in_string = np.cumsum(codes == _QUOTE, dtype=np.int32) % 2 == 1
    return int(np.cumsum(np.where(in_string, 0, _STEP[codes]), dtype=np.int32).max(initial=0))


def check_depth(data: bytes | str, limit: int = MAX_DEPTH) -> None:
    """Refuse (400 `malformed_json`) a JSON text nested deeper than `limit` arrays and objects,
    before it is decoded: vectorised, in linear time, without recursion."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return
    encoding = json.detect_encoding(raw)
    if encoding not in ("utf-8", "utf-8-sig"):  # UTF-16/32: the brackets are in the text, not its bytes
        raw = raw.decode(encoding, "replace").encode("utf-8", "surrogatepass")
    if json_depth(raw) > limit:
        raise BadRequest(f"The JSON body is nested deeper than {limit} levels.", code="malformed_json",
                       details={"limit_depth": limit})


def loads(data: bytes | str) -> Any:
    """json.loads of a body whose depth check_depth accepts."""
    check_depth(data)
    return json.loads(data)


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON, with request bodies (request.get_json) checked for depth first."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        check_depth(s)
        return super().loads(s, **kwargs)


def init_app(app: Flask) -> None:
    """Bound JSON depth, and put the text guard in front of everything (the lean till path too)."""
    app.json = JSONProvider(app)
    app.wsgi_app = InputGuard(app, app.wsgi_app)
