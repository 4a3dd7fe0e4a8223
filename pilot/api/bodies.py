"""Request bodies read whole or not at all, and bounded while they stream.

Under gunicorn a body that ends before its Content-Length reads as a normal end of file (Werkzeug's
stream ends quietly at a maximum length), and one that ends before its last chunk raises whatever the
server's chunked reader raises: every body is read through `RequestBody` (streams) or `request_data`
(bodies Flask read whole), which turn both into one 400, `incomplete_body`, so the rows of a client
that disconnected mid-upload are never stored. A gzipped body is bounded after decompression
(PILOT_MAX_DECOMPRESSED_BYTES) while it streams.
"""
from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from flask import current_app, request
from werkzeug.exceptions import ClientDisconnected, HTTPException, RequestEntityTooLarge

from pilot.errors import BadRequest, Invalid, PilotError, TooLarge, Unsupported
from pilot.row_validation import READ_SIZE


def incomplete(received: int | None = None) -> PilotError:
    """The 400 of a body that ended before the client finished sending it."""
    expected = request.content_length
    details: dict[str, Any] = {}
    if expected is None:
        message = "The body ended before its last chunk (or its chunked framing is broken)"
    else:
        message = f"The body ended before its Content-Length of {expected} bytes"
        details["content_length"] = expected
        if received is not None:
            message += f" ({received} arrived)"
            details["received_bytes"] = received
    return BadRequest(message + "; nothing was stored.", code="incomplete_body", details=details)


@contextmanager
def _reading() -> Iterator[None]:
    """Reading the body: a failure of the server's reader (a disconnect, broken chunked framing) is an
    incomplete body; werkzeug's own answers (e.g. its 413 over the body limit) stay as they are."""
    try:
        yield
    except ClientDisconnected:
        raise incomplete() from None
    except HTTPException:
        raise
    except Exception:
        raise incomplete() from None


def _cut_at_the_limit(data: bytes) -> bool:
    """Whether a body sent without Content-Length (chunked) was read up to max_content_length with
    more to come: Werkzeug stops there without a word, and the cut JSON read as malformed (a 400)."""
    limit = request.max_content_length
    return request.content_length is None and limit is not None and len(data) >= limit \
        and bool(request.environ["wsgi.input"].read(1))


def require_complete(received: int) -> None:
    """A 400 when fewer bytes arrived than the request's Content-Length announced."""
    expected = request.content_length
    if expected is not None and received < expected:
        raise incomplete(received)


class RequestBody(io.RawIOBase):
    """The request's body as the server hands it over, where an early end is an error, never an end of
    file (see the module's docstring)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream, self.received = stream, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        with _reading():
            size = self.stream.readinto(buffer)
        if not size:
            require_complete(self.received)
            return 0
        self.received += size
        return size


def request_data() -> bytes:
    """The whole request body as Flask read it: a 400 when it ended early, a 413 when a chunked body
    goes on past the limit."""
    with _reading():
        data = request.get_data(cache=True)
    require_complete(len(data))
    if _cut_at_the_limit(data):
        raise RequestEntityTooLarge()
    return data


class _Inflated(io.RawIOBase):
    """A gzip stream decompressed, at most `limit` bytes of it; a bad gzip is a 400."""

    def __init__(self, raw: IO[bytes], limit: int) -> None:
        self.gzip, self.limit, self.total = gzip.GzipFile(fileobj=raw, mode="rb"), limit, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            size = self.gzip.readinto(buffer)
        except (OSError, EOFError, zlib.error) as exc:
            raise BadRequest(f"The body is not valid gzip: {exc}.", code="bad_encoding") from None
        self.total += size
        if self.total > self.limit:
            raise TooLarge(f"The decompressed body is larger than PILOT_MAX_DECOMPRESSED_BYTES "
                                f"({self.limit} bytes).", details={"limit_bytes": self.limit})
        return size


def content_encoding(gzipped: bool = True) -> str:
    """The body's Content-Encoding: identity, or gzip where the endpoint takes it (`gzipped`); else a 415."""
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower() or "identity"
    if encoding not in (("identity", "gzip") if gzipped else ("identity",)):
        accepted = "gzip or none" if gzipped else "it uncompressed"
        raise Unsupported(f"Content-Encoding {encoding!r} is not supported here; send {accepted}.")
    return encoding


def request_body(gzipped: bool = True) -> IO[bytes]:
    """The request's body as a stream, whole or a 400, decompressed when sent gzipped (`gzipped`: whether
    this endpoint takes gzip at all)."""
    encoding = content_encoding(gzipped)
    raw: io.RawIOBase = RequestBody(request.stream)
    if encoding == "gzip":
        raw = _Inflated(io.BufferedReader(raw, READ_SIZE), current_app.config["MAX_DECOMPRESSED_BYTES"])
    return io.BufferedReader(raw, READ_SIZE)


def json_body() -> Any:
    """The request's JSON body, or a 400 naming what is wrong with it."""
    if not request.is_json:
        raise Unsupported("Send the body as application/json.")
    request_data()
    data = request.get_json(silent=True)
    if data is None:
        raise BadRequest("Request body is not valid JSON.", code="malformed_json")
    return data


def json_rows(key: str, limit: int) -> list[dict]:
    """The list under `key` of a JSON batch body, checked for shape and size."""
    return batch_rows(json_body(), key, limit)


def batch_rows(body: Any, key: str, limit: int, hint: str = "") -> list[dict]:
    """The list under `key` of a decoded batch body: an object with that one key, 1 to `limit` rows."""
    if not isinstance(body, dict) or set(body) != {key}:
        raise Invalid(f"Body must be an object with the single key {key!r}.",
                       details={"fields": {key: ["Missing or unknown fields."]}})
    rows = body[key]
    if not isinstance(rows, list) or not rows:
        raise Invalid(f"{key!r} must be a non-empty list.", details={"fields": {key: ["Not a non-empty list."]}})
    if len(rows) > limit:
        raise TooLarge(f"A batch holds at most {limit} rows; this one has {len(rows)}.{hint}",
                       details={"limit_rows": limit})
    return rows
