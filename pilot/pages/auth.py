"""Page login with an API token into a server-side web session, and logout."""
from __future__ import annotations

import re
from urllib.parse import urlsplit

from flask import Response, current_app, redirect, render_template, request, session, url_for

from pilot.auth import Principal, principal_for
from pilot.db import db
from pilot.pages import web_sessions
from pilot.pages.base import bp

# Browsers drop tabs and newlines from a URL and read a backslash as a slash, so `/\t/evil.example`
# and `/\evil.example` lead to another site although they start with one slash.
_NOT_IN_A_TARGET = re.compile(r"[\x00-\x1f\x7f-\x9f\\]")


def local_target(target: str) -> str | None:
    """`target` if it is a path of this site (where a login may go on to), else None."""
    if _NOT_IN_A_TARGET.search(target) or not target.startswith("/") or target.startswith("//"):
        return None
    parts = urlsplit(target)
    return None if parts.scheme or parts.netloc else target


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Log in with an API token."""
    error = None
    if request.method == "POST":
        principal: Principal | None = principal_for(db.session, request.form.get("token", "").strip())
        if principal is not None:
            return _logged_in(principal)
        error = "That token is unknown or revoked."
    response = current_app.make_response((render_template("login.html", error=error), 401 if error else 200))
    return _no_store(response)


def _logged_in(principal: Principal) -> Response:
    """Start a web session (a new one: none carried over from before the login) and go on."""
    session.clear()
    secret = web_sessions.start(db.session, principal, current_app.permanent_session_lifetime)
    db.session.commit()
    session["sid"], session.permanent = secret, True
    home = url_for("pages.own_store" if principal.role == "store" else "pages.index")
    return _no_store(redirect(local_target(request.args.get("next", "")) or home))


def _no_store(response: Response) -> Response:
    """The answer, kept by no cache (the login form takes a token's secret)."""
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/logout")
def logout():
    """End the login on the server (every copy of the cookie) and forget it."""
    if "sid" in session:
        web_sessions.end(db.session, session["sid"])
        db.session.commit()
    session.clear()
    return redirect(url_for("pages.login"))
