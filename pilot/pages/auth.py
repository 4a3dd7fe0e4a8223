"""Page login with an e-mail and password (pilot.users) or an API token into a server-side web session,
password reset through a one-time link, and logout."""
from __future__ import annotations

import re
from urllib.parse import urlsplit

from flask import Response, current_app, flash, redirect, render_template, request, session, url_for

from pilot import oidc, users
from pilot.auth import Principal, principal_for
from pilot.db import db
from pilot.errors import Forbidden, PilotError, TooManyRequests
from pilot.models import User
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
    """Log in with an e-mail address and password, or with an API token."""
    error, status = None, 200
    if request.method == "POST" and "email" in request.form:
        try:
            token = users.sign_in(db.session, request.form["email"], request.form.get("password", ""))
            db.session.commit()  # the attempt counts either way (the rate limit)
        except TooManyRequests as exc:
            token, error, status = None, exc.message, 429
        if token is not None:
            user = db.session.get(User, token.user_id)
            return _logged_in(Principal(token.id, token.name, token.role, token.store.code if token.store else None,
                                        user.id, user.email))
        error, status = error or "Unknown e-mail address or wrong password.", status if error else 401
    elif request.method == "POST":
        principal: Principal | None = principal_for(db.session, request.form.get("token", "").strip())
        if principal is not None:
            return _logged_in(principal)
        error, status = "That token is unknown or revoked.", 401
    response = current_app.make_response((render_template("login.html", error=error), status))
    return _no_store(response)


@bp.get("/login/sso")
def oidc_login():
    """Single sign-on: on to the identity provider (PILOT_OIDC_*)."""
    if not oidc.configured():
        return _no_store(current_app.make_response((render_template("login.html", error="Single sign-on is not "
                                                                    "configured."), 404)))
    target, flow = oidc.start(url_for("pages.oidc_callback", _external=True))
    session["oidc"] = {**flow, "next": local_target(request.args.get("next", "")) or ""}
    return _no_store(redirect(target))


@bp.get("/login/sso/callback")
def oidc_callback():
    """Back from the identity provider: the signed-in person's session, or why not."""
    flow = session.pop("oidc", None) or {}
    try:
        if request.args.get("error"):
            why = request.args.get("error_description") or request.args["error"]
            raise Forbidden(f"The identity provider refused: {why}.", code="oidc_refused")
        token = oidc.sign_in(db.session, oidc.claims(flow, request.args.get("state", ""),
                                                     request.args.get("code", "")))
    except PilotError as exc:
        db.session.commit()  # a refused sign-in is recorded like a wrong password
        return _no_store(current_app.make_response((render_template("login.html", error=exc.message), 403)))
    user = db.session.get(User, token.user_id)
    principal = Principal(token.id, token.name, token.role, token.store.code if token.store else None, user.id,
                          user.email)
    return _logged_in(principal, flow.get("next") or None)


@bp.route("/reset/<secret>", methods=["GET", "POST"])
def reset_password(secret: str):
    """Set a new password through a one-time link an admin issued."""
    error, status = None, 200
    if request.method == "POST":
        password = request.form.get("password", "")
        if password != request.form.get("confirm", ""):
            error, status = "The two passwords differ.", 422
        else:
            try:
                user = users.reset_password(db.session, secret, password)
                db.session.commit()
                flash(f"Password set for {user.email}; sign in with it.")
                return redirect(url_for("pages.login"))
            except PilotError as exc:
                db.session.rollback()
                error, status = exc.message, 422
    response = current_app.make_response((render_template("reset_password.html", error=error), status))
    return _no_store(response)


def _logged_in(principal: Principal, target: str | None = None) -> Response:
    """Start a web session (a new one: none carried over from before the login) and go on."""
    session.clear()
    secret = web_sessions.start(db.session, principal, current_app.permanent_session_lifetime)
    db.session.commit()
    session["sid"], session.permanent = secret, True
    home = url_for("pages.own_store" if principal.role == "store" else "pages.index")
    return _no_store(redirect(local_target(target or request.args.get("next", "")) or home))


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
