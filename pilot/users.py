"""People: accounts with a role, password sign-in (rate-limited), one-time reset links, tokens of their own.

Passwords are hashed with scrypt from the standard library (`hashlib.scrypt`, OpenSSL's): memory-hard
like argon2, one of the two functions OWASP recommends, and no new dependency to keep patched; the
parameters (N=2^14, r=8, p=1: 16 MiB, tens of milliseconds) are stored with each hash, so they can be
raised later without breaking old hashes. A web sign-in acts through the user's own pages token (its
secret is never kept), so the pages' sessions, the audit and revocation work as for any token; disabling
a user revokes every token of theirs, which ends their sessions and API access at once.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from pilot.audit import record
from pilot.auth import hash_token, issue_token, revoke_token
from pilot.db import utcnow
from pilot.errors import Conflict, Invalid, NotFound, TooManyRequests
from pilot.models import ApiToken, PasswordReset, SignInAttempt, Store, User
from pilot.models.tokens import ROLES

SCRYPT = {"n": 2**14, "r": 8, "p": 1}
MIN_PASSWORD = 10
MAX_FAILURES = 5  # failed sign-ins of one e-mail address within WINDOW before it is refused for a while
WINDOW = timedelta(minutes=15)
RESET_HOURS = 24
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
PAGES_TOKEN = "pages sign-in"


def hash_password(password: str) -> str:
    """A salted scrypt hash with its parameters: scrypt$n$r$p$salt$hash."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, maxmem=64 * 1024 * 1024, dklen=32, **SCRYPT)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT['n']}${SCRYPT['r']}${SCRYPT['p']}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(stored: str | None, password: str) -> bool:
    """Whether the password matches the stored hash (in constant time)."""
    try:
        kind, n, r, p, salt, digest = (stored or "").split("$")
        if kind != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             maxmem=64 * 1024 * 1024, dklen=len(expected))
    except ValueError:
        return False
    return hmac.compare_digest(got, expected)


_DUMMY = hash_password(secrets.token_urlsafe(16))  # checked for unknown e-mails: the same time either way


def user_dict(u: User) -> dict[str, Any]:
    """A user as plain data (never the password hash)."""
    return {"id": u.id, "name": u.name, "email": u.email, "role": u.role, "store": u.store.code if u.store else None,
            "has_password": u.password_hash is not None, "created_at": u.created_at, "disabled_at": u.disabled_at}


def _bad(field: str, message: str) -> Invalid:
    return Invalid(message, details={"fields": {field: [message]}})


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise _bad("password", f"A password has at least {MIN_PASSWORD} characters.")


def create_user(session: Session, actor: str, data: dict[str, Any]) -> User:
    """A new user, audited; `password` is optional (a feed's service user signs in with tokens only)."""
    email = (data.get("email") or "").strip().lower()
    if not EMAIL.match(email):
        raise _bad("email", "An e-mail address like ann@example.com is needed.")
    if data.get("role") not in ROLES:
        raise _bad("role", f"One of {', '.join(ROLES)}.")
    store = None
    if data.get("store"):
        store = session.scalar(select(Store).where(Store.code == data["store"]))
        if store is None:
            raise _bad("store", f"No store {data['store']!r}.")
    if (data["role"] == "store") != (store is not None):
        raise _bad("store", "Store staff need a store." if data["role"] == "store" else "Only store staff have one.")
    if session.scalar(select(User.id).where(User.email == email)):
        raise Conflict(f"A user with e-mail {email} exists already.", code="email_taken")
    password = data.get("password")
    if password is not None:
        _check_password(password)
    user = User(name=data.get("name") or email, email=email, role=data["role"], store=store,
                password_hash=hash_password(password) if password else None)
    session.add(user)
    session.flush()
    record(session, actor, "create", "user", user.id, after=user_dict(user))
    return user


def get_user(session: Session, ident: str | int) -> User:
    """The user by id or e-mail, or a 404."""
    text = str(ident).strip().lower()
    user = session.get(User, int(text)) if text.isdigit() else session.scalar(select(User).where(User.email == text))
    if user is None:
        raise NotFound(f"No user {ident!r}.")
    return user


def list_users(session: Session) -> list[User]:
    """Every user, oldest first."""
    return list(session.scalars(select(User).order_by(User.id)))


def disable_user(session: Session, actor: str, user: User) -> int:
    """Disable the user: every token of theirs is revoked, which ends their sessions now; how many."""
    before = user_dict(user)
    user.disabled_at = user.disabled_at or utcnow()
    tokens = list(session.scalars(select(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))))
    for token in tokens:
        revoke_token(session, actor, token)
    session.flush()
    record(session, actor, "disable", "user", user.id, before=before, after={**user_dict(user),
                                                                              "tokens_revoked": len(tokens)})
    return len(tokens)


def issue_user_token(session: Session, actor: str, user: User, name: str) -> tuple[ApiToken, str]:
    """An API token of the user (their role and store), audited; the secret is returned once."""
    if user.disabled_at is not None:
        raise Conflict(f"User {user.email} is disabled.", code="user_disabled")
    token, secret = issue_token(session, name, user.role, user.store)
    token.user_id = user.id
    session.flush()
    record(session, actor, "create", "api_token", token.id, after={"name": name, "role": user.role,
                                                                   "user": user.email})
    return token, secret


def sign_in(session: Session, email: str, password: str) -> ApiToken | None:
    """The pages token of the user whose e-mail and password match (None otherwise); the attempt is
    recorded either way (the caller commits). Too many failures lately: a 429 `too_many_sign_ins`."""
    email = email.strip().lower()[:254]
    since = utcnow() - WINDOW
    failures = session.scalar(select(func.count()).select_from(SignInAttempt).where(
        SignInAttempt.email == email, SignInAttempt.at >= since, SignInAttempt.succeeded.is_(False))) or 0
    if failures >= MAX_FAILURES:
        raise TooManyRequests(f"Too many failed sign-ins for this e-mail address; try again in "
                              f"{int(WINDOW.total_seconds() // 60)} minutes or ask an admin for a reset link.",
                              code="too_many_sign_ins")
    user = session.scalar(select(User).where(User.email == email))
    ok = verify_password(user.password_hash if user else _DUMMY, password) and user is not None \
        and user.disabled_at is None
    session.add(SignInAttempt(email=email, succeeded=ok))
    return _pages_token(session, user) if ok else None


def _pages_token(session: Session, user: User) -> ApiToken:
    """The user's token for web sessions (made on first sign-in; its secret is not kept: sessions need none)."""
    token = session.scalar(select(ApiToken).where(ApiToken.user_id == user.id, ApiToken.name == PAGES_TOKEN,
                                                  ApiToken.revoked_at.is_(None)))
    if token is None:
        token, _ = issue_token(session, PAGES_TOKEN, user.role, user.store)
        token.user_id = user.id
        session.flush()
    return token


def issue_reset(session: Session, actor: str, user: User) -> str:
    """A one-time reset secret for the user (the link is /reset/<secret>), valid RESET_HOURS; older ones
    of the user stop working."""
    now = utcnow()
    session.execute(update(PasswordReset).where(PasswordReset.user_id == user.id, PasswordReset.used_at.is_(None))
                    .values(used_at=now))
    secret = secrets.token_urlsafe(32)
    session.add(PasswordReset(user_id=user.id, token_hash=hash_token(secret), created_by=actor,
                              expires_at=now + timedelta(hours=RESET_HOURS)))
    record(session, actor, "issue_reset_link", "user", user.id, after={"email": user.email, "hours": RESET_HOURS})
    return secret


def reset_password(session: Session, secret: str, password: str) -> User:
    """Set a new password through a reset link, which then stops working."""
    reset = session.scalar(select(PasswordReset).where(PasswordReset.token_hash == hash_token(secret)))
    if reset is None or reset.used_at is not None or reset.expires_at < utcnow():
        raise Invalid("This reset link is unknown, used or expired; ask an admin for a new one.",
                      code="reset_link_invalid", details={"fields": {"token": ["Unknown, used or expired."]}})
    user = session.get(User, reset.user_id)
    if user.disabled_at is not None:
        raise Conflict(f"User {user.email} is disabled.", code="user_disabled")
    _check_password(password)
    user.password_hash, reset.used_at = hash_password(password), utcnow()
    record(session, f"user:{user.id}:{user.email}", "reset_password", "user", user.id, after={"email": user.email})
    return user
