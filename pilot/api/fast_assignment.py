"""The till's lean path: POST /api/v1/pilots/<key>/assignments answered without Flask's request cycle.

A till asks for an assignment at every purchase, so this one endpoint carries most of a live
pilot's traffic. Through the full request cycle (routing, the before-request hooks, webargs and
marshmallow in and out, the ORM session and its pooled connection) a new assignment cost about
twice the CPU of its own work (bench/assign.py: 1.5 ms of worker CPU against 0.8 ms here).

`FastAssignmentPath` wraps the app's WSGI callable. On PostgreSQL it answers an assignment request itself
when it can answer it completely: a live token allowed to assign (its role read once per process,
then remembered as the view remembers it: auth._seen), a JSON body that AssignIn loads, and a
decision that needs no ORM session. It runs the view's own code (`pilot.assignment.assign_customer`: the
same statements, checks and answer) on a pooled connection, straight on the driver. Anything else
goes on to the Flask app with the body put back, and the full cycle answers it from the start:
SQLite, invalid input, every error answer (401, 403, 404, 422), group eligibility, a race lost, a
database error (a connection found lost is dropped from the pool first). Each write here is one
statement that settles races by unique constraints, so a request handed on after its write is
answered as the repeat it then is. It never reads the query string: pilot.inputs.InputGuard, in front
of it, has refused any request whose path or query is not clean text.

PILOT_TILL_LEAN_PATH=0 (config TILL_LEAN_PATH) turns it off: the app answers every request.
"""
from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import marshmallow as ma
from flask import Flask

from pilot.api.assignments import AssignIn
from pilot.api.regions import CODE
from pilot.assignment import AssignmentDb, NeedsFullRequest, TokenNotLive, assign_customer, holdout
from pilot.auth import allowed, bearer_hash, by_hash, live_principal, remember, seen_tokens, touch_due, touch_statement
from pilot.db import utcnow
from pilot.driver import driver_rows
from pilot.errors import PilotError
from pilot.inputs import loads

log = logging.getLogger(__name__)

ENDPOINT = "assignments.Assignments"
# a pilot key as keys are made (api.regions.CODE); any other path goes on to the app
PATH = re.compile(rf"/api/v1/pilots/({CODE.regex.pattern.removeprefix('^').removesuffix('$')})/assignments")
# an answer of this path says so (operators and tests see which path served a request)
HEADERS = [("Content-Type", "application/json"), ("X-Pilot-Path", "fast")]
FIELDS = {"customer", "store", "new_customer"}


class FastAssignmentPath:
    """WSGI middleware answering the till's assignment requests it can answer completely (module doc)."""

    def __init__(self, app: Flask, wsgi_app: Callable) -> None:
        self.app, self.wsgi_app = app, wsgi_app
        self.schema = AssignIn()
        new_fields = self.schema.fields["new_customer"].schema.fields
        self.new_defaults = {name: f.load_default for name, f in new_fields.items()}

    def plain(self, data: Any) -> dict[str, Any] | None:
        """What AssignIn loads from the bodies tills send most, without marshmallow's machinery (a
        quarter of this path's own CPU): a customer id, a store or none, a new customer with only a
        home store or none. None for any other body, which the schema loads (tests/test_till.py
        checks both agree)."""
        if type(data) is not dict or not data.keys() <= FIELDS:
            return None
        customer, store, new = data.get("customer"), data.get("store"), data.get("new_customer")
        if type(customer) is not str or not 1 <= len(customer) <= 128 or not (store is None or type(store) is str):
            return None
        if "\x00" in customer or (store is not None and "\x00" in store):
            return None
        if new is not None:
            if type(new) is not dict or not new.keys() <= {"home_store"}:
                return None
            home = new.get("home_store")
            if not (home is None or type(home) is str and "\x00" not in home):
                return None
            new = {**{k: v() if callable(v) else v for k, v in self.new_defaults.items()}, "home_store": home}
        return {"customer": customer, "store": store, "new_customer": new}

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") == "POST" and self.app.config["TILL_LEAN_PATH"]:
            match = PATH.fullmatch(environ.get("PATH_INFO", ""))
            if match is not None and self._postgres():
                body = self._body(environ)
                if body is not None:
                    answer = self._answer(match.group(1), body, environ)
                    if answer is not None:
                        start_response("200 OK", [*HEADERS, ("Content-Length", str(len(answer)))])
                        return [answer]
                    environ["wsgi.input"] = io.BytesIO(body)  # the app reads the same body
        return self.wsgi_app(environ, start_response)

    def _postgres(self) -> bool:
        return self.app.extensions["pilot.db"][0].dialect.name == "postgresql"

    def _body(self, environ: dict[str, Any]) -> bytes | None:
        """The JSON body when its length is declared and within the limit, else None (untouched)."""
        if environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower() != "application/json":
            return None
        try:
            length = int(environ.get("CONTENT_LENGTH") or "")
        except ValueError:
            return None
        if not 0 < length <= self.app.config["MAX_CONTENT_LENGTH"]:
            return None
        return environ["wsgi.input"].read(length)

    def _answer(self, key: str, body: bytes, environ: dict[str, Any]) -> bytes | None:
        """The JSON answer, or None to hand the request on to the app."""
        hashed = bearer_hash(environ.get("HTTP_AUTHORIZATION", ""))
        if hashed is None:
            return None
        try:
            raw = loads(body)  # depth-checked as the app checks it: a body too deep is the app's 400
            data = self.plain(raw) or self.schema.load(raw)
        except (ValueError, TypeError, ma.ValidationError, PilotError):
            return None
        seen = seen_tokens(self.app)
        principal = seen.get(hashed)
        engine = self.app.extensions["pilot.db"][0]
        pooled = engine.raw_connection()
        driver = pooled.driver_connection
        try:
            driver.autocommit = True  # each statement commits by itself (see assignment.assign_one)
            tdb = AssignmentDb(True, partial(driver_rows, driver, engine.dialect))
            if principal is None:  # first seen here: its role is read once (the till query rechecks it live)
                found = tdb.rows(by_hash(), {"token_hash": hashed})
                principal = live_principal(found[0] if found else None)
                if principal is None:
                    return None
                remember(seen, hashed, principal)
            if not allowed(ENDPOINT, "POST", principal.role):
                return None
            if touch_due(self.app, principal.token_id):
                tdb.rows(touch_statement(), {"token_id": principal.token_id, "now": utcnow()})
            answer = assign_customer(tdb, key, data, principal, hashed, holdout(self.app.config))
        except (NeedsFullRequest, TokenNotLive, PilotError):
            return None
        except engine.dialect.loaded_dbapi.Error as exc:
            if engine.dialect.is_disconnect(exc, driver, None):
                pooled.invalidate(exc)
            log.warning("lean till path: %s; handed on to the app", exc)
            return None
        except Exception:
            log.exception("lean till path failed; handed on to the app")
            return None
        finally:
            if pooled.dbapi_connection is not None:  # (None once invalidated)
                try:
                    driver.autocommit = False  # as the pool's other users expect it
                except engine.dialect.loaded_dbapi.Error as exc:
                    pooled.invalidate(exc)
            pooled.close()
        if answer["assigned_at"] is not None:
            answer["assigned_at"] = answer["assigned_at"].isoformat()
        # as Flask's jsonify writes it (sorted keys, compact, ASCII, a final newline): the same bytes
        return (json.dumps(answer, sort_keys=True, separators=(",", ":")) + "\n").encode()


def init_app(app: Flask) -> None:
    """Put the lean path in front of the app (it acts on PostgreSQL while TILL_LEAN_PATH is set)."""
    app.wsgi_app = app.extensions["pilot.api.fast_assignment"] = FastAssignmentPath(app, app.wsgi_app)


def fast_assignment_path(app: Flask) -> FastAssignmentPath:
    """The app's lean path (other middleware may stand in front of it in app.wsgi_app)."""
    return app.extensions["pilot.api.fast_assignment"]
