"""Admin pages: API tokens (create with a role and store, revoke, last use) and the audit log with filters
and each change's before and after, field by field."""
from __future__ import annotations

from datetime import UTC, datetime, time

from flask import flash, g, redirect, render_template, request, url_for
from sqlalchemy import select

from pilot.audit import record
from pilot.audit_diff import changes
from pilot.auth import issue_token, revoke_token, token_dict
from pilot.db import db, found
from pilot.errors import PilotError
from pilot.models import ApiToken, AuditEvent, Store
from pilot.models.tokens import ROLES
from pilot.pages.base import bp, commit_or_flash, login_required
from pilot.stores import get_store

ROLE_HELP = {"admin": "everything, including tokens and the audit log", "manager": "programmes, groups, pilots "
             "and their lifecycle", "analyst": "reads pilots and reports, runs analyses", "store": "its own store's "
             "page and assignments at its till", "feed": "sends customers and transactions, reads assignments"}
PAGE = 50


@bp.route("/admin/tokens", methods=["GET", "POST"])
@login_required("admin")
def tokens():
    """Every API token with its role, store and last use; a form to create one (its secret shown once)."""
    secret, errors = None, {}
    if request.method == "POST":
        name, role, code = (request.form.get(k, "").strip() for k in ("name", "role", "store"))
        if not name:
            errors["name"] = "Give the token a name that says who or what uses it."
        if not errors:
            try:
                store = get_store(db.session, code) if code and role == "store" else None
                token, secret = issue_token(db.session, name, role, store)
                record(db.session, g.principal.actor, "create", "api_token", token.id, after=token_dict(token))
                db.session.commit()
            except PilotError as exc:
                db.session.rollback()
                errors["store" if "store" in exc.message.lower() else "role"] = exc.message
                secret = None
    rows = db.session.scalars(select(ApiToken).order_by(ApiToken.revoked_at.is_not(None), ApiToken.id.desc())).all()
    stores = db.session.scalars(select(Store).order_by(Store.code)).all()
    html = render_template("tokens.html", tokens=rows, stores=stores, roles=ROLES, role_help=ROLE_HELP,
                           secret=secret, errors=errors, form=request.form if errors else {})
    return html, 422 if errors else 200, {"Cache-Control": "no-store"}  # the one page that shows a secret


@bp.post("/admin/tokens/<int(max=2147483647):token_id>/revoke")
@login_required("admin")
def token_revoke(token_id: int):
    """Revoke a token: every request and page login with it is refused from now on."""
    token = found(db.session, ApiToken, f"No token {token_id}.", id=token_id)

    def change() -> str:
        revoke_token(db.session, g.principal.actor, token)
        return f"Token {token.name} ({token.prefix}…) revoked."
    commit_or_flash(change, "Not revoked")
    return redirect(url_for("pages.tokens"))


def _day(text: str, end: bool = False) -> datetime | None:
    try:
        day = datetime.fromisoformat(text).date() if text else None
    except ValueError:
        flash(f"{text!r} is not a date (YYYY-MM-DD); that filter is left out.", "error")
        return None
    return datetime.combine(day, time.max if end else time.min, tzinfo=UTC) if day else None


@bp.get("/admin/audit")
@login_required("admin")
def audit_log():
    """The audit log, newest first, filtered by what changed, the action, who and when; each event with
    the fields it changed, before and after."""
    args = request.args
    stmt = select(AuditEvent)
    for name in ("entity_type", "action", "actor", "entity_id"):
        if args.get(name):
            stmt = stmt.where(getattr(AuditEvent, name) == args[name])
    since, until = _day(args.get("since", "")), _day(args.get("until", ""), end=True)
    if since:
        stmt = stmt.where(AuditEvent.at >= since)
    if until:
        stmt = stmt.where(AuditEvent.at <= until)
    if args.get("before", "").isdigit():
        stmt = stmt.where(AuditEvent.id < int(args["before"]))
    events = db.session.scalars(stmt.order_by(AuditEvent.id.desc()).limit(PAGE + 1)).all()
    more = len(events) > PAGE
    events = events[:PAGE]
    kinds = db.session.scalars(select(AuditEvent.entity_type).distinct().order_by(AuditEvent.entity_type)).all()
    actions = db.session.scalars(select(AuditEvent.action).distinct().order_by(AuditEvent.action)).all()
    older = {**args.to_dict(), "before": events[-1].id} if more else None
    return render_template("audit.html", events=[(e, changes(e.before, e.after)) for e in events], kinds=kinds,
                           actions=actions, args=args, older=older)
