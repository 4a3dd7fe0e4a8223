"""HTML pages: token login into a signed HttpOnly session cookie, CSRF-checked forms."""
from __future__ import annotations

import secrets
from functools import wraps

from flask import Blueprint, Flask, abort, g, redirect, render_template, request, session, url_for
from sqlalchemy import func, select

from pilot.auth import Principal, principal_by_id, principal_for
from pilot.db import db
from pilot.models import Customer, CustomerGroup, Region, Store
from pilot.segments import preview, saved_groups

bp = Blueprint("pages", __name__, template_folder="templates")


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
            principal = principal_by_id(db.session, session["token_id"]) if "token_id" in session else None
            if principal is None:
                session.pop("token_id", None)
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


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Log in with an API token."""
    error = None
    if request.method == "POST":
        principal: Principal | None = principal_for(db.session, request.form.get("token", "").strip())
        if principal is not None:
            session.clear()
            session["token_id"] = principal.token_id
            target = request.args.get("next", "")
            return redirect(target if target.startswith("/") and not target.startswith("//") else url_for("pages.index"))
        error = "That token is unknown or revoked."
    return render_template("login.html", error=error), 401 if error else 200


@bp.post("/logout")
def logout():
    """Forget the login."""
    session.clear()
    return redirect(url_for("pages.login"))


@bp.get("/")
@login_required("admin", "manager", "analyst")
def index():
    """Overview: regions, stores, customers and the customer groups."""
    count = lambda model: db.session.scalar(select(func.count()).select_from(model))  # noqa: E731
    totals = {"regions": count(Region), "stores": count(Store), "customers": count(Customer),
              "groups": count(CustomerGroup)}
    groups = saved_groups(db.session)
    return render_template("index.html", totals=totals, groups=groups, counts=preview(db.session, groups)["counts"])


def init_app(app: Flask) -> None:
    """Register the pages and the CSRF helper for templates."""
    app.jinja_env.globals["csrf_token"] = csrf_token
    app.register_blueprint(bp)
