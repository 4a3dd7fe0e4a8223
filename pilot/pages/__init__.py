"""HTML pages: token login into a signed HttpOnly session cookie, CSRF-checked forms."""
from __future__ import annotations

import secrets
from functools import wraps

from flask import Blueprint, Flask, abort, flash, g, redirect, render_template, request, session, url_for
from sqlalchemy import func, select

from pilot import rollout
from pilot.auth import Principal, principal_by_id, principal_for
from pilot.catalog import get_store
from pilot.db import db
from pilot.errors import ApiError
from pilot.mechanics import describe
from pilot.models import AuditEvent, Customer, CustomerGroup, Pilot, Region, Store
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
            home = url_for("pages.own_store" if principal.role == "store" else "pages.index")
            return redirect(target if target.startswith("/") and not target.startswith("//") else home)
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


@bp.get("/pilots")
@login_required("admin", "manager", "analyst")
def pilots():
    """All pilots with state and stage."""
    rows = db.session.scalars(select(Pilot).order_by(Pilot.id.desc())).all()
    return render_template("pilots.html", pilots=rows)


@bp.get("/pilots/<key>")
@login_required("admin", "manager", "analyst")
def pilot_page(key: str):
    """One pilot: configuration, stages, timeline, enrolled stores by region."""
    pilot = rollout.get_pilot(db.session, key)
    enrolments = rollout.active_enrolments(db.session, pilot)
    by_region: dict[str, list] = {}
    for e in sorted(enrolments, key=lambda e: (e.store.region.name, e.store.code)):
        by_region.setdefault(e.store.region.name, []).append(e)
    timeline = db.session.scalars(select(AuditEvent).where(
        ((AuditEvent.entity_type == "pilot") & (AuditEvent.entity_id == pilot.key))
        | ((AuditEvent.entity_type == "stage") & AuditEvent.entity_id.startswith(f"{pilot.key}/", autoescape=True)))
        .order_by(AuditEvent.id)).all()
    variants = {v.key: (v, describe(v.mechanic, v.parameters)) for v in pilot.programme.variants}
    actions = [a for a, allowed in rollout.TRANSITIONS.items() if pilot.state in allowed and a != "start"
               or a == "start" and pilot.state == "draft"]
    return render_template("pilot.html", pilot=pilot, by_region=by_region, timeline=timeline, variants=variants,
                           actions=actions if g.principal.role in ("admin", "manager") else [])


@bp.post("/pilots/<key>/<any(start, pause, resume, advance, complete, rollback, cancel):action>")
@login_required("admin", "manager")
def pilot_action(key: str, action: str):
    """Apply a lifecycle action from the pilot page (confirmed in the browser, CSRF-checked)."""
    pilot = rollout.get_pilot(db.session, key)
    try:
        rollout.transition(db.session, g.principal.actor, pilot, action, request.form.get("reason") or None)
        db.session.commit()
        flash(f"{action.capitalize()}: the pilot is now {pilot.state}.")
    except ApiError as exc:
        db.session.rollback()
        flash(f"Not done: {exc.description}", "error")
    return redirect(url_for("pages.pilot_page", key=key))


@bp.get("/store")
@login_required("store")
def own_store():
    """A store's own status page."""
    return store_page(g.principal.store_code)


@bp.get("/stores/<code>")
@login_required("admin", "manager", "analyst", "store")
def store_page(code: str):
    """What a store takes part in, readable on a phone."""
    if g.principal.role == "store" and g.principal.store_code != code:
        abort(403)
    store = get_store(db.session, code)
    return render_template("store.html", store=store, pilots=rollout.store_status(db.session, store))


def init_app(app: Flask) -> None:
    """Register the pages and the CSRF helper for templates."""
    app.jinja_env.globals["csrf_token"] = csrf_token
    app.register_blueprint(bp)
