"""The pages blueprint and what every view of it shares: the login check and CSRF-checked forms."""
from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from functools import cache, wraps
from pathlib import Path

import flask_bootstrap
from flask import Blueprint, abort, flash, g, redirect, render_template, request, send_file, session, url_for
from werkzeug.exceptions import HTTPException

from pilot.auth import principal_for, unauthenticated
from pilot.db import db
from pilot.errors import PilotError
from pilot.pages import web_sessions

bp = Blueprint("pages", __name__, template_folder="templates", static_folder="static", static_url_path="/assets/pages")

ANALYSTS = ("admin", "manager", "analyst")


def csrf_token() -> str:
    """The session's CSRF token, made on first use."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def _check_csrf() -> None:
    sent = request.form.get("csrf_token", "")
    if not sent or not secrets.compare_digest(sent, session.get("csrf", "")):
        abort(400, "The form's CSRF token is missing or wrong; reload the page and try again.")


def login_required(*roles: str, bearer: bool = False):
    """Views behind a login; with roles, only those roles. With `bearer`, an API token in the
    Authorization header ("Bearer <token>") stands for the login (exports fetched by scripts), under
    the same roles; a wrong or revoked token is a 401, never a redirect to the login form."""
    def decorate(view):
        @wraps(view)
        def wrapped(*args, **kwargs):
            header = request.headers.get("Authorization", "") if bearer else ""
            if header:
                scheme, _, secret = header.partition(" ")
                principal = principal_for(db.session, secret.strip()) if scheme.lower() == "bearer" else None
                if principal is None:
                    raise unauthenticated()
            else:
                principal = web_sessions.principal_of(db.session, session["sid"]) if "sid" in session else None
                db.session.commit()  # the visit it recorded; the view's own transaction starts after
            if principal is None:
                session.pop("sid", None)
                return redirect(url_for("pages.login", next=request.path))
            if roles and principal.role not in roles:
                abort(403)
            g.principal = principal
            return view(*args, **kwargs)
        return wrapped
    return decorate


def commit_or_flash(change: Callable[[], str], refused: str) -> bool:
    """Make a form's change and commit it, then flash the message `change` returned; when the domain
    refuses the change, roll it back and flash `refused` with the reason. Whether it was made."""
    try:
        message = change()
        db.session.commit()
    except PilotError as exc:
        db.session.rollback()
        flash(f"{refused}: {exc.message}", "error")
        return False
    flash(message)
    return True


ERROR_TITLES = {400: "The request could not be read", 401: "Please log in", 403: "Not allowed",
                404: "Not found", 405: "Not allowed here", 409: "Not possible right now", 413: "Too large",
                422: "Something in the request is wrong", 500: "Something went wrong on our side",
                503: "Pilot is unavailable for a moment"}
ERROR_HELP = {403: "Your login does not give access to this. Ask an admin if you need it.",
              404: "The address may be mistyped, or the thing was deleted.",
              409: "The change does not fit the current state; the message says why.",
              500: "The error was logged. Try again; if it happens again, tell an admin what you did.",
              503: "The database cannot be reached; try again in a minute."}


def error_page(exc: HTTPException):
    """An HTML error page in the site's layout (page routes; the API answers JSON)."""
    status = exc.code or 500
    message = exc.description if status != 500 else ""
    html = render_template("error.html", status=status, title=ERROR_TITLES.get(status, exc.name),
                           message=message, help=ERROR_HELP.get(status, ""))
    return html, status, [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]


_STEP = re.compile(r"([a-z_]+)(?:\[(\d+)\])?")
_THINGS = {"variants": "Variant", "stages": "Stage", "rules": "Rule", "guardrails": "Guardrail", "groups": "Group"}


def readable_path(path: str) -> str:
    """A field path of the API (variants[1].parameters.rate) in words (Variant 2 › Discount)."""
    from pilot.mechanic_fields import LABELS
    words = []
    for name, index in _STEP.findall(path or ""):
        if name == "parameters":
            continue
        label = _THINGS.get(name) or LABELS.get(name, (name.replace("_", " ").capitalize(),))[0]
        words.append(f"{label} {int(index) + 1}" if index and name in _THINGS else
                     f"{label} row {int(index) + 1}" if index else label)
    return " › ".join(words) or "The form"


@cache
def bootstrap_css() -> Path:
    """Bootstrap 5's stylesheet as the installed Bootstrap-Flask package ships it."""
    return Path(flask_bootstrap.__file__).parent / "static" / "bootstrap5" / "css" / "bootstrap.min.css"


@bp.get("/assets/bootstrap.min.css")
def bootstrap_asset():
    """The pages' stylesheet, served by the app: installations often have no internet (no CDN)."""
    return send_file(bootstrap_css(), mimetype="text/css", max_age=86400)


@bp.before_app_request
def _csrf_on_forms() -> None:
    if request.method == "POST" and request.blueprint == "pages":
        _check_csrf()
