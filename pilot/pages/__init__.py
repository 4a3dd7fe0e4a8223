"""HTML pages: token login into a server-side session (its secret in a signed HttpOnly cookie),
CSRF-checked forms.

The blueprint and what every page shares live here; the views, by concern, in auth (login,
logout), pilots (overview, dashboard, pilot page, lifecycle actions), reports (analysis reports
and exports) and stores (store pages).
"""
from __future__ import annotations

import secrets
from functools import wraps

from flask import Blueprint, Flask, Response, abort, g, redirect, request, session, url_for

from pilot.db import db
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


@bp.before_app_request
def _csrf_on_forms() -> None:
    if request.method == "POST" and request.blueprint == "pages":
        _check_csrf()


# On every answer, API included: no page is framed by another site (clickjacking; both the old
# header and CSP's frame-ancestors), no answer is read as another type than it says. Only
# frame-ancestors: a CSP with script-src would block the inline scripts of Swagger UI and the reports.
SECURITY_HEADERS = {"X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'",
                    "X-Content-Type-Options": "nosniff"}


def security_headers(response: Response) -> Response:
    """Add SECURITY_HEADERS where the answer does not set them itself."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def init_app(app: Flask) -> None:
    """Register the pages, the CSRF helper for templates and the headers of every answer."""
    from pilot.pages import auth, pilots, reports, stores  # noqa: F401  (their views join bp before it is registered)
    app.jinja_env.globals["csrf_token"] = csrf_token
    app.register_blueprint(bp)
    app.after_request(security_headers)
