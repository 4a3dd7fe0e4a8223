"""Server-side records of page logins.

Flask's session cookie is signed, not stored: the server cannot take it back, so a copy taken before
logout stayed valid. Now the cookie carries a random session secret and the database only its hash
(web_sessions); every page request looks the session up, and logout or revoking its token ends it
for every copy of the cookie.
"""
from __future__ import annotations

import secrets
from datetime import timedelta
from functools import cache

from sqlalchemy import Select, String, bindparam, delete, select, update
from sqlalchemy.orm import Session

from pilot.auth import Principal, hash_token, live_principal
from pilot.db import utcnow
from pilot.models import ApiToken, Store, User, WebSession

# how often a session's last visit is written: a page view need not write each time
SEEN_EVERY = timedelta(minutes=1)


def start(session: Session, principal: Principal, lifetime: timedelta) -> str:
    """Record a new web session of the principal; return its secret (for the cookie only)."""
    now = utcnow()
    session.execute(delete(WebSession).where(WebSession.expires_at < now))  # what no cookie can use any more
    secret = secrets.token_urlsafe(32)
    session.add(WebSession(session_hash=hash_token(secret), token_id=principal.token_id, created_at=now,
                           last_seen_at=now, expires_at=now + lifetime))
    session.flush()
    return secret


def principal_of(session: Session, secret: str) -> Principal | None:
    """The principal of a live web session (not ended, not expired, its token not revoked), or None;
    the visit is recorded in the session at most once a minute."""
    now = utcnow()
    row = session.execute(_live(), {"session_hash": hash_token(secret), "now": now}).first()
    if row is None:
        return None
    if now - row.last_seen_at >= SEEN_EVERY:
        session.execute(update(WebSession).where(WebSession.id == row.id).values(last_seen_at=now))
    return live_principal(tuple(row)[2:])


def end(session: Session, secret: str) -> None:
    """End the web session of the secret (logout), if it is live."""
    session.execute(update(WebSession).where(WebSession.session_hash == hash_token(secret),
                                             WebSession.ended_at.is_(None)).values(ended_at=utcnow()))


@cache
def _live() -> Select:
    """A live session's id, last visit and its token as auth.by_hash reads one."""
    return (select(WebSession.id, WebSession.last_seen_at, ApiToken.id, ApiToken.name, ApiToken.role,
                   ApiToken.revoked_at, Store.code, User.id, User.email, User.disabled_at)
            .join(ApiToken, ApiToken.id == WebSession.token_id)
            .outerjoin(Store, Store.id == ApiToken.store_id).outerjoin(User, User.id == ApiToken.user_id)
            .where(WebSession.session_hash == bindparam("session_hash", type_=String),
                   WebSession.ended_at.is_(None), ApiToken.revoked_at.is_(None),
                   WebSession.expires_at > bindparam("now", type_=WebSession.__table__.c.expires_at.type)))
