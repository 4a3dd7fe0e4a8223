"""API tokens, the role matrix, and the check run before every API request."""
from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from functools import cache
from typing import Any

from flask import Flask, current_app, g, request
from sqlalchemy import Select, String, Update, bindparam, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from pilot.audit import record
from pilot.db import db, utcnow
from pilot.errors import Forbidden, Invalid, PilotError, Unauthenticated
from pilot.models import ApiToken, Store, User, WebSession
from pilot.models.tokens import ROLES

ADMIN, MANAGER, ANALYST, STORE, FEED = ROLES
EVERYONE = frozenset(ROLES)
READERS = frozenset({ADMIN, MANAGER, ANALYST})
MANAGERS = frozenset({ADMIN, MANAGER})
WRITERS = frozenset({ADMIN, MANAGER, FEED})
ADMINS = frozenset({ADMIN})
FEEDS = frozenset({ADMIN, FEED})

# The role matrix: endpoint -> HTTP method -> roles allowed. An API route missing here is refused
# to everyone (and tests/test_roles.py fails), so every new route needs a line.
RULES: dict[str, dict[str, frozenset[str]]] = {
    "me.Me": {"GET": EVERYONE},
    "tokens.Tokens": {"GET": ADMINS, "POST": ADMINS},
    "tokens.TokenById": {"GET": ADMINS, "DELETE": ADMINS},
    "audit.AuditEvents": {"GET": ADMINS},
    "regions.Regions": {"GET": READERS, "POST": MANAGERS},
    "regions.RegionByCode": {"GET": READERS, "PATCH": MANAGERS, "DELETE": MANAGERS},
    "stores.Stores": {"GET": READERS, "POST": MANAGERS},
    "stores.StoreImport": {"POST": MANAGERS},
    "stores.StoreByCode": {"GET": READERS | {STORE}, "PATCH": MANAGERS, "DELETE": MANAGERS},
    "customers.Customers": {"GET": READERS, "POST": WRITERS},
    "customers.CustomerImport": {"POST": WRITERS},
    "customers.CustomerByExternalId": {"GET": READERS},
    "customer_groups.CustomerGroups": {"GET": READERS, "POST": MANAGERS},
    "customer_groups.CustomerGroupPreview": {"POST": READERS},
    "customer_groups.CustomerGroupByKey": {"GET": READERS, "PATCH": MANAGERS, "DELETE": MANAGERS},
    "stores.StoreStatus": {"GET": READERS | {STORE}},
    "metrics.Metrics": {"GET": READERS, "POST": MANAGERS},
    "metrics.MetricByKey": {"GET": READERS, "PATCH": MANAGERS},
    "programmes.Programmes": {"GET": READERS, "POST": MANAGERS},
    "programmes.ProgrammeByKey": {"GET": READERS, "PATCH": MANAGERS, "DELETE": MANAGERS},
    "pilots.Pilots": {"GET": READERS, "POST": MANAGERS},
    "pilots.PilotImport": {"POST": MANAGERS},
    "pilots.PilotByKey": {"GET": READERS, "PATCH": MANAGERS, "DELETE": MANAGERS},
    "pilots.PilotStages": {"POST": MANAGERS},
    "pilots.PilotStageByPosition": {"PATCH": MANAGERS},
    "pilots.PilotAction": {"POST": MANAGERS},
    "pilots.PilotEnrolments": {"GET": READERS},
    "pilots.PilotBalance": {"GET": READERS},
    "pilots.PilotTimeline": {"GET": READERS},
    "plans.PilotPlan": {"POST": READERS},
    "plans.PilotPlanByKey": {"GET": READERS},
    "plans.PilotPlanStores": {"POST": READERS},
    "assignments.Assignments": {"POST": frozenset({ADMIN, MANAGER, FEED, STORE})},
    "assignments.AssignmentList": {"GET": EVERYONE},
    "assignments.AssignmentsBulk": {"POST": MANAGERS},
    "assignments.AssignmentsSummary": {"GET": READERS},
    "assignments.AssignmentsProgress": {"GET": READERS},
    "transactions.Transactions": {"GET": READERS, "POST": FEEDS},
    "transactions.TransactionUpload": {"POST": FEEDS},
    "events.Events": {"GET": READERS, "POST": FEEDS},
    "events.EventUpload": {"POST": FEEDS},
    "ingestion_batches.IngestionBatches": {"GET": READERS | FEEDS},
    "ingestion_batches.IngestionBatchById": {"GET": READERS | FEEDS},
    "data_quality.DataQuality": {"GET": READERS | FEEDS},
    "analyses.PilotAnalyses": {"GET": READERS, "POST": READERS},
    "analysis_runs.AnalysisById": {"GET": READERS},
    "analysis_runs.AnalysisApply": {"POST": MANAGERS},
    "jobs.Jobs": {"GET": READERS},
    "governance.AnalysisPlan": {"GET": READERS},
    "governance.AnalysisPlanAmendments": {"POST": MANAGERS},
    "governance.PilotGate": {"GET": READERS},
    "governance.Layers": {"GET": READERS},
    "approvals.PilotApprovals": {"GET": READERS},
    "approvals.ApprovalDecision": {"POST": MANAGERS},
    "users.Users": {"GET": ADMINS, "POST": ADMINS},
    "users.UserById": {"GET": ADMINS},
    "users.UserDisable": {"POST": ADMINS},
    "users.UserResetLink": {"POST": ADMINS},
    "users.UserTokens": {"POST": ADMINS},
    "webhooks.Webhooks": {"GET": ADMINS, "POST": ADMINS},
    "webhooks.WebhookById": {"GET": ADMINS, "PATCH": ADMINS, "DELETE": ADMINS},
    "webhooks.WebhookDeliveries": {"GET": ADMINS},
}


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token's identity, role and store scope."""

    token_id: int | None
    name: str
    role: str
    store_code: str | None = None
    user_id: int | None = None  # the person the token belongs to (pilot.users)
    user_email: str | None = None

    @property
    def actor(self) -> str:
        """Who the audit log names: the person, else the token, else the name (cli, scheduler)."""
        if self.user_id:
            return f"user:{self.user_id}:{self.user_email}"
        return f"token:{self.token_id}:{self.name}" if self.token_id else self.name


CLI = Principal(token_id=None, name="cli", role=ADMIN)


def hash_token(secret: str) -> str:
    """SHA-256 of the secret: tokens carry 256 random bits, so a fast hash is enough."""
    return hashlib.sha256(secret.encode()).hexdigest()


def issue_token(session: Session, name: str, role: str, store: Store | None) -> tuple[ApiToken, str]:
    """Create a token; the secret is returned once and never stored."""
    if role not in ROLES:
        raise Invalid(f"Unknown role {role!r}.", details={"fields": {"role": [f"One of {', '.join(ROLES)}."]}})
    if (role == STORE) != (store is not None):
        msg = "A store token needs a store." if role == STORE else "Only a store token is bound to a store."
        raise Invalid(msg, details={"fields": {"store": [msg]}})
    secret = "plt_" + secrets.token_urlsafe(32)
    token = ApiToken(name=name, role=role, store=store, token_hash=hash_token(secret), prefix=secret[:8])
    session.add(token)
    session.flush()
    return token, secret


def principal_for(session: Session, secret: str) -> Principal | None:
    """The principal of a live token, or None."""
    return _principal_by_hash(session, hash_token(secret))


def _principal_by_hash(session: Session, token_hash: str, conn: Connection | None = None) -> Principal | None:
    """Read on `conn` when given (a connection outside any transaction), else on a connection of its
    own, outside the request's transaction."""
    if conn is not None:
        row = conn.execute(by_hash(), {"token_hash": token_hash}).first()
    else:
        with session.bind.connect() as own:
            row = own.execution_options(isolation_level="AUTOCOMMIT").execute(
                by_hash(), {"token_hash": token_hash}).first()
    return live_principal(row)


def live_principal(row: tuple | None) -> Principal | None:
    """The principal of a `by_hash` row, None for no row, a revoked token or a disabled user's."""
    if row is None or row[3] is not None or row[7] is not None:
        return None
    return Principal(row[0], row[1], row[2], row[4], *row[5:7])


@cache
def by_hash() -> Select:
    """One Core query per API request (no ORM objects): the token and its store's code."""
    return (select(ApiToken.id, ApiToken.name, ApiToken.role, ApiToken.revoked_at, Store.code, User.id, User.email,
                   User.disabled_at)
            .outerjoin(Store, Store.id == ApiToken.store_id).outerjoin(User, User.id == ApiToken.user_id)
            .where(ApiToken.token_hash == bindparam("token_hash", type_=String)))


def token_dict(token: ApiToken) -> dict[str, Any]:
    """A token as plain data for audit events (never its secret or hash)."""
    return {"name": token.name, "role": token.role, "prefix": token.prefix,
            "store": token.store.code if token.store else None, "revoked_at": token.revoked_at}


def revoke_token(session: Session, actor: str, token: ApiToken) -> None:
    """Revoke a live token, audited, and end its web sessions (the pages refuse them from now on either
    way; ended, their records say so). A token revoked already stays as it is."""
    if token.revoked_at is not None:
        return
    before, now = token_dict(token), utcnow()
    token.revoked_at = now
    session.execute(update(WebSession).where(WebSession.token_id == token.id, WebSession.ended_at.is_(None))
                    .values(ended_at=now))
    record(session, actor, "revoke", "api_token", token.id, before=before, after=token_dict(token))


def current() -> Principal:
    """The authenticated principal of this request."""
    return g.principal


def require_store_scope(store_code: str) -> None:
    """A store token may only see its own store."""
    refused = store_scope_error(current(), store_code)
    if refused:
        raise refused


def store_scope_error(principal: Principal, store_code: str) -> PilotError | None:
    """The 403 of a store token asking about another store, else None."""
    if principal.role == STORE and principal.store_code != store_code:
        return Forbidden("This token may only read its own store.", code="store_scope")
    return None


def allowed(endpoint: str, method: str, role: str) -> bool:
    """Whether the role may call the endpoint with the method."""
    method = "GET" if method == "HEAD" else method
    return role in RULES.get(endpoint, {}).get(method, frozenset())


def init_app(app: Flask) -> None:
    """Authenticate and authorise every /api/v1 request before its view runs."""

    @app.before_request
    def _authorise() -> None:
        if not request.path.startswith("/api/v1/") or request.method == "OPTIONS":
            return
        g.principal = _authenticate()
        if request.endpoint is None:
            return  # 404/405 follow
        if not allowed(request.endpoint, request.method, g.principal.role):
            raise Forbidden(f"Role {g.principal.role!r} may not {request.method} {request.path}.")


def _view_class() -> type | None:
    view = current_app.view_functions.get(request.endpoint) if request.endpoint else None
    return getattr(view, "view_class", None)


SEEN_MAX = 10_000


def _seen() -> dict[str, Principal]:
    """Tokens this app (in this process) has seen live, by hash, for views that read the token again
    in their own first statement (`rechecks_token = True` on the view class; the view calls `forget`
    when that statement finds it revoked), and for the lean till path (pilot.api.fast_assignment). For them the role
    check needs no query of its own: a token's role and store never change, and a token revoked
    anywhere is refused by its next request."""
    return seen_tokens(current_app)


def seen_tokens(app: Flask) -> dict[str, Principal]:
    """The app's tokens seen live (see _seen)."""
    return app.extensions.setdefault("pilot.tokens_seen", {})


def remember(seen: dict[str, Principal], token_hash: str, principal: Principal) -> None:
    """Keep a token found live (at most SEEN_MAX: the memory starts over when full)."""
    if len(seen) >= SEEN_MAX:
        seen.clear()
    seen[token_hash] = principal


def forget(token_hash: str) -> None:
    """Drop a token found revoked from this app's memory."""
    _seen().pop(token_hash, None)


def unauthenticated() -> PilotError:
    """The 401 of a request without a live token."""
    return Unauthenticated("A valid API token is required (Authorization: Bearer <token>).")


def token_hash() -> str:
    """The hash of this request's token."""
    return g.token_hash


def bearer_hash(header: str) -> str | None:
    """The hash of the token of an Authorization header ("Bearer <token>"), None without one."""
    scheme, _, secret = header.partition(" ")
    return hash_token(secret.strip()) if scheme.lower() == "bearer" and secret.strip() else None


def _authenticate() -> Principal:
    hashed = bearer_hash(request.headers.get("Authorization", ""))
    principal = None
    if hashed is not None:
        g.token_hash = hashed
        view = _view_class()
        conn = None
        if getattr(view, "autocommit", False):
            # A view without a transaction (each of its writes is one statement that settles races by
            # itself) gets its connection now; the token is read on it: one pool checkout per request.
            conn = db.session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        seen = _seen() if getattr(view, "rechecks_token", False) else None
        principal = seen.get(g.token_hash) if seen is not None else None
        if principal is None:
            principal = _principal_by_hash(db.session, g.token_hash, conn)
            if principal is not None and seen is not None:
                remember(seen, g.token_hash, principal)
    if principal is None:
        raise unauthenticated()
    _touch(principal.token_id, conn)
    return principal


TOUCH_SECONDS = 60


def touch_due(app: Flask, token_id: int) -> bool:
    """Whether to record now that a token was used: at most once a minute per token and process, so
    a busy till path does not write on every request."""
    touched = app.extensions.setdefault("pilot.tokens_touched", {})
    now = time.monotonic()
    if now - touched.get(token_id, -TOUCH_SECONDS) < TOUCH_SECONDS:
        return False
    touched[token_id] = now
    return True


@cache
def touch_statement() -> Update:
    """Record a token's last use (bind token_id and now), one small autocommit UPDATE."""
    return update(ApiToken).where(ApiToken.id == bindparam("token_id")).values(
        last_used_at=bindparam("now", type_=ApiToken.__table__.c.last_used_at.type))


def _touch(token_id: int, conn: Connection | None) -> None:
    """Record a token's use when due (touch_due), on `conn` or on an autocommit connection of its own."""
    if not touch_due(current_app, token_id):
        return
    params = {"token_id": token_id, "now": utcnow()}
    if conn is not None:
        conn.execute(touch_statement(), params)
    else:
        with db.session.bind.connect() as own:
            own.execution_options(isolation_level="AUTOCOMMIT").execute(touch_statement(), params)
