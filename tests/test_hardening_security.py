"""Issue #20, security: logins redirect only within the site (10), log lines cannot be forged (11),
logout ends a session on the server (12), responses forbid framing and sniffing and a new token's
secret is not cached (14)."""
from __future__ import annotations

import hashlib
import logging
import os
import re
import subprocess
import sys
import urllib.parse
from datetime import timedelta

import pytest
from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from sqlalchemy import select, update

from pilot import create_app
from pilot.db import db, utcnow
from pilot.logs import SafeFormatter, escape, safe
from tests.factories import csrf, login
from tests.live import ROOT

FORGED = "[2026-01-01 00:00:00 +0000] [1] [CRITICAL] forged"
FORGED_URL = urllib.parse.quote("\n" + FORGED, safe="")


def forged_lines(log: str) -> list[str]:
    """Lines of the log (split at every line boundary Python knows) that begin with forged text."""
    return [line for line in log.splitlines() if line.startswith(("[2026-01-01", "forged"))]


def login_response(client, tokens, target: str, role: str = "admin"):
    return client.post(f"/login?next={target}", data={"token": tokens[role], "csrf_token": csrf(client)})


# -- 10. open redirect -----------------------------------------------------------------------------

@pytest.mark.parametrize("target", [
    "/%09/evil.example/phish", "/%0A/evil.example", "/%0D%0A/evil.example",
    "%09//evil.example", "%20//evil.example", "/%5Cevil.example", "%5C%5Cevil.example", "//evil.example",
    "https://evil.example/", "https:evil.example", "javascript:alert(1)", "evil.example", "/%7F/evil.example"])
def test_login_redirects_only_to_a_path_of_this_site(client, tokens, target):
    r = login_response(client, tokens, target)
    assert r.status_code == 302 and r.headers["Location"] == "/"


def test_login_keeps_a_path_of_this_site(client, tokens):
    r = login_response(client, tokens, urllib.parse.quote("/pilots?state=running", safe=""))
    assert r.headers["Location"] == "/pilots?state=running"
    assert login_response(client, tokens, "/%09/evil.example", "store").headers["Location"] == "/store"


def test_login_over_gunicorn_does_not_redirect_off_site(live_server, tokens):
    server = live_server()
    page = server.request("GET", "/login")
    cookie = page.headers["Set-Cookie"].split(";")[0]
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.data.decode()).group(1)
    body = urllib.parse.urlencode({"token": tokens["admin"], "csrf_token": token}).encode()
    r = server.request("POST", "/login?next=/%09/evil.example/phish", body, {
        "Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 302 and r.headers["Location"] == "/"


# -- 11. log injection -----------------------------------------------------------------------------

def _raise_chained(message: str) -> None:
    try:
        raise ValueError(f"cause {message}")
    except ValueError as exc:
        raise RuntimeError(f"effect {message}") from exc


def _record(message: str) -> logging.LogRecord:
    try:
        _raise_chained(message)
    except RuntimeError:
        return logging.getLogger("pilot.test").makeRecord(
            "pilot.test", logging.ERROR, __file__, 1, "failed on %s", (message,), sys.exc_info())


def test_a_record_is_one_line_plus_its_traceback_with_every_cause():
    text = SafeFormatter("%(levelname)s %(message)s").format(_record("x\n" + FORGED + "\u2028" + FORGED))
    assert forged_lines(text) == []
    assert text.startswith("ERROR failed on x\\n[2026-01-01")
    assert "ValueError: cause x\\n[2026-01-01" in text and "RuntimeError: effect x\\n[2026-01-01" in text
    assert "The above exception was the direct cause of the following exception:" in text
    assert 'in _raise_chained\n    raise ValueError' in text  # frames stay as Python writes them


def test_exception_text_cached_by_a_plain_formatter_is_not_reused():
    record = _record("x\n" + FORGED)
    logging.Formatter().format(record)  # another handler's formatter ran first and cached its text
    assert forged_lines(SafeFormatter().format(record)) == []


def test_escape_writes_controls_and_direction_overrides_as_escapes():
    assert escape("a\tb\x1b[2J\x85c\u202ed") == "a\\tb\\x1b[2J\\x85c\\u202ed"


def test_a_safe_copy_formats_as_the_original():
    record = logging.makeLogRecord({"msg": "hi\n%s", "args": (FORGED,), "levelname": "INFO"})
    assert safe(logging.Formatter("{levelname}: {message}", style="{")).format(record) == f"INFO: hi\\n{FORGED}"


def _app_error_probe(server) -> str:
    """A page request the app fails on (its database has no tables, and the signed cookie names a
    session it must look up): the app logs the error with the request's path."""
    probe = Flask("probe", root_path=str(ROOT))
    probe.secret_key = "test-secret"  # as tests/live.py starts the server
    signer = SecureCookieSessionInterface().get_signing_serializer(probe)
    cookie = "session=" + signer.dumps({"sid": "x", "token_id": 1})
    assert server.request("GET", f"/stores/S{FORGED_URL}", headers={"Cookie": cookie}).status >= 500
    return server.log_with("/stores/S\\n")


@pytest.fixture
def no_tables_server(live_server, backend, tmp_path):
    """gunicorn as serve.sh runs it, on a database without tables (logging is the same on both backends)."""
    if backend[0] != "sqlite":
        pytest.skip("log lines do not depend on the database; checked once, on SQLite")
    (tmp_path / "empty.db").touch()
    return lambda **kw: live_server(env={"PILOT_DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}"}, **kw)


def test_gunicorn_log_has_no_forged_line(no_tables_server):
    server = no_tables_server()
    log = _app_error_probe(server)
    assert "GET /stores/S\\n[2026-01-01 00:00:00 +0000] [1] [CRITICAL] forged" in log
    assert server.request("GET", "/healthz", headers={"User-Agent": f"ua\x85{FORGED}"}).status == 200
    log = server.log_with("ua\\x85")
    for request in (b"GET /x\n" + FORGED.encode() + b" HTTP/1.1\r\n\r\n",
                    b"GET /x\r" + FORGED.encode() + b" HTTP/1.1\r\n\r\n",
                    b"GET /x HTTP/1.1\r\nBad\x0b" + FORGED.encode() + b": 1\r\n\r\n",
                    b"GET /x\x85" + FORGED.replace(" ", "%20").encode() + b" HTTP/1.1\r\n\r\n"):
        assert server.raw(request).startswith(b"HTTP/1.1 400")
    log = server.log_with("Invalid HTTP header name")
    assert log.count("Invalid request from") >= 4
    assert forged_lines(log) == []


def test_app_lines_are_escaped_under_gunicorns_own_logger(no_tables_server):
    """serve.sh started gunicorn without pilot.server, so with gunicorn's plain logger: the app's
    error lines must still be escaped (the app installs its own safe handler)."""
    server = no_tables_server(args=["--logger-class", "gunicorn.glogging.Logger"])
    log = _app_error_probe(server)
    assert "GET /stores/S\\n[2026-01-01" in log
    assert forged_lines(log) == []


def test_scheduler_process_logs_escaped_lines(database_url, backend, tmp_path):
    if backend[0] != "sqlite":
        pytest.skip("log lines do not depend on the database; checked once, on SQLite")
    code = ("import logging, apscheduler.schedulers.blocking as b\n"
            "b.BlockingScheduler.start = lambda self, *a, **k: logging.getLogger('pilot.scheduler').error(\n"
            f"    'job failed on %s', {('x' + chr(10) + FORGED)!r})\n"
            "from pilot.cli import main\nmain()\n")
    env = {**os.environ, "PILOT_DATABASE_URL": database_url, "PILOT_AUTO_MIGRATE": "0",
           "PILOT_SECRET_KEY": "test-secret", "PILOT_INSTANCE_PATH": str(tmp_path / "instance")}
    done = subprocess.run([sys.executable, "-c", code, "scheduler"], check=False, cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    assert "analyses every" in log  # the scheduler's own INFO line is still written
    assert "job failed on x\\n[2026-01-01" in log and forged_lines(log) == []


# -- 12. sessions end on the server ----------------------------------------------------------------

def _cookie(client) -> str:
    return client.get_cookie("session").value


def test_a_cookie_copied_before_logout_no_longer_works(app, client, tokens):
    login(client, tokens["analyst"])
    copied = _cookie(client)
    assert client.post("/logout", data={"csrf_token": csrf(client, "/")}).status_code == 302
    thief = app.test_client()
    thief.set_cookie("session", copied)
    assert thief.get("/").status_code == 302


def test_the_cookie_holds_a_session_secret_the_database_only_its_hash(app, client, tokens):
    from pilot.models import WebSession
    login(client, tokens["analyst"])
    data = app.session_interface.get_signing_serializer(app).loads(_cookie(client))
    assert "token_id" not in data and tokens["analyst"] not in str(data)
    with app.app_context():
        row = db.session.scalars(select(WebSession)).one()
        stored = [str(getattr(row, c.key)) for c in WebSession.__table__.columns]
    assert row.session_hash == hashlib.sha256(data["sid"].encode()).hexdigest()
    assert not any(data["sid"] in value for value in stored)
    assert row.ended_at is None and row.created_at <= row.last_seen_at < row.expires_at


def test_logout_ends_the_record_and_revoking_a_token_ends_its_sessions(app, client, tokens, admin):
    from pilot.models import ApiToken, WebSession
    login(client, tokens["analyst"])
    client.post("/logout", data={"csrf_token": csrf(client, "/")})
    login(client, tokens["analyst"])
    other = app.test_client()
    login(other, tokens["manager"])
    with app.app_context():
        analyst = db.session.scalars(select(ApiToken.id).where(ApiToken.role == "analyst")).one()
    assert client.delete(f"/api/v1/tokens/{analyst}", headers=admin).status_code == 200
    assert client.get("/").status_code == 302 and other.get("/").status_code == 200
    with app.app_context():
        rows = db.session.scalars(select(WebSession).order_by(WebSession.id)).all()
    assert [r.ended_at is not None for r in rows] == [True, True, False]


def test_an_expired_session_is_refused(app, client, tokens):
    from pilot.models import WebSession
    login(client, tokens["analyst"])
    assert client.get("/").status_code == 200
    with app.app_context():
        db.session.execute(update(WebSession).values(expires_at=utcnow()))
        db.session.commit()
    assert client.get("/").status_code == 302


def test_a_visit_is_recorded_at_most_once_a_minute(app, client, tokens, monkeypatch):
    from pilot.models import WebSession
    from pilot.pages import web_sessions
    login(client, tokens["analyst"])
    with app.app_context():
        first = db.session.scalars(select(WebSession.last_seen_at)).one()
    later = first + timedelta(seconds=30)
    monkeypatch.setattr(web_sessions, "utcnow", lambda: later)
    client.get("/")
    with app.app_context():
        assert db.session.scalars(select(WebSession.last_seen_at)).one() == first
    later = first + timedelta(minutes=2)
    client.get("/")
    with app.app_context():
        assert db.session.scalars(select(WebSession.last_seen_at)).one() == later


@pytest.mark.parametrize(("env", "secure"), [
    ({}, True), ({"PILOT_ENV": "development"}, False), ({"PILOT_SECURE_COOKIES": "0"}, False),
    ({"PILOT_ENV": "development", "PILOT_SECURE_COOKIES": "1"}, True), ({"PILOT_ENV": "production"}, True)])
def test_session_cookie_is_secure_unless_in_development(monkeypatch, tmp_path, env, secure):
    monkeypatch.delenv("PILOT_ENV", raising=False)
    monkeypatch.delenv("PILOT_SECURE_COOKIES", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PILOT_SECRET_KEY", "x")
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/p.db", "AUTO_MIGRATE": False})
    assert app.config["SESSION_COOKIE_SECURE"] is secure


def test_login_sets_a_secure_cookie_by_default(client, tokens):
    r = login_response(client, tokens, "/")
    assert "Secure" in r.headers["Set-Cookie"] and "HttpOnly" in r.headers["Set-Cookie"]


# -- 14. headers -----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/login", "/", "/api/v1/me", "/api/docs", "/api/openapi.json", "/healthz",
                                  "/assets/plotly.min.js", "/nowhere"])
def test_every_response_forbids_framing_and_sniffing(client, path):
    r = client.get(path)
    assert r.headers["X-Frame-Options"] == "DENY"
    assert r.headers["Content-Security-Policy"] == "frame-ancestors 'none'"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    r.close()


def test_a_new_tokens_secret_is_not_cached(client, admin, tokens):
    made = client.post("/api/v1/tokens", json={"name": "feed", "role": "feed"}, headers=admin)
    assert made.status_code == 201 and made.headers["Cache-Control"] == "no-store"
    assert client.get("/login").headers["Cache-Control"] == "no-store"
    assert login_response(client, tokens, "/").headers["Cache-Control"] == "no-store"
