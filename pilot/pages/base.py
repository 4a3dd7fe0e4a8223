"""The pages blueprint and what every view of it shares: the login check and CSRF-checked forms."""
from __future__ import annotations

import secrets
from collections.abc import Callable
from functools import wraps

from flask import Blueprint, abort, flash, g, redirect, request, session, url_for

from pilot.db import db
from pilot.errors import PilotError
from pilot.pages import web_sessions

bp = Blueprint("pages", __name__, template_folder="templates")

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


def login_required(*roles: str):
    """Views behind a login; with roles, only those roles."""
    def decorate(view):
        @wraps(view)
        def wrapped(*args, **kwargs):
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


def commit_or_flash(change: Callable[[], str], refused: str) -> None:
    """Make a form's change and commit it, then flash the message `change` returned; when the domain
    refuses the change, roll it back and flash `refused` with the reason."""
    try:
        message = change()
        db.session.commit()
    except PilotError as exc:
        db.session.rollback()
        flash(f"{refused}: {exc.message}", "error")
        return
    flash(message)


@bp.before_app_request
def _csrf_on_forms() -> None:
    if request.method == "POST" and request.blueprint == "pages":
        _check_csrf()
