"""Single sign-on with OpenID Connect (PILOT_OIDC_*): the authorization code flow with PKCE.

The ID token comes straight from the provider's token endpoint over the back channel, so, as OpenID
Connect Core 3.1.3.7 allows, the TLS connection vouches for its issuer instead of its signature; its
issuer, audience, expiry and nonce are checked. The provider must be reached over https (http only
for a provider on this machine, as in the tests). Signing in needs a Pilot user with the token's e-mail
address (`email_verified` not false): single sign-on proves who someone is, Pilot's users say what
they may do.
"""
from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
import urllib.parse
import urllib.request
from typing import Any

from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import Session

from pilot.errors import Forbidden, Unavailable
from pilot.models import ApiToken, SignInAttempt, User

TIMEOUT_SECONDS = 10
LOCAL = ("localhost", "127.0.0.1", "::1")


def configured() -> bool:
    """Whether single sign-on is set up (PILOT_OIDC_ISSUER and PILOT_OIDC_CLIENT_ID)."""
    return bool(current_app.config.get("OIDC_ISSUER") and current_app.config.get("OIDC_CLIENT_ID"))


def _issuer() -> str:
    issuer = current_app.config["OIDC_ISSUER"].rstrip("/")
    parts = urllib.parse.urlsplit(issuer)
    if parts.scheme != "https" and parts.hostname not in LOCAL:
        raise Unavailable("PILOT_OIDC_ISSUER must be an https URL.", code="oidc_misconfigured")
    return issuer


def _fetch(request: urllib.request.Request | str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            return json.loads(response.read())
    except (OSError, ValueError) as exc:
        raise Unavailable(f"The identity provider did not answer as expected: {exc}", code="oidc_unavailable") from exc


def discovery() -> dict[str, Any]:
    """The provider's configuration (/.well-known/openid-configuration), kept for an hour."""
    cache = current_app.extensions.setdefault("pilot.oidc", {})
    if cache.get("until", 0) < time.monotonic():
        cache.update(doc=_fetch(_issuer() + "/.well-known/openid-configuration"), until=time.monotonic() + 3600)
    return cache["doc"]


def start(redirect_uri: str) -> tuple[str, dict[str, str]]:
    """The provider's authorization URL, and what the session keeps until the callback."""
    flow = {"state": secrets.token_urlsafe(24), "nonce": secrets.token_urlsafe(24),
            "verifier": secrets.token_urlsafe(48), "redirect_uri": redirect_uri}
    challenge = base64.urlsafe_b64encode(hashlib.sha256(flow["verifier"].encode()).digest()).rstrip(b"=").decode()
    query = {"response_type": "code", "client_id": current_app.config["OIDC_CLIENT_ID"], "redirect_uri": redirect_uri,
             "scope": current_app.config.get("OIDC_SCOPES") or "openid email profile", "state": flow["state"],
             "nonce": flow["nonce"], "code_challenge": challenge, "code_challenge_method": "S256"}
    return discovery()["authorization_endpoint"] + "?" + urllib.parse.urlencode(query), flow


def claims(flow: dict[str, str], state: str, code: str) -> dict[str, Any]:
    """The checked ID token claims for the code the provider sent back."""
    if not flow or not secrets.compare_digest(state or "", flow.get("state", "")):
        raise Forbidden("The sign-in could not be matched to this browser; start it again.", code="oidc_state")
    config = current_app.config
    body = urllib.parse.urlencode({"grant_type": "authorization_code", "code": code,
                                   "redirect_uri": flow["redirect_uri"], "code_verifier": flow["verifier"]}).encode()
    basic = base64.b64encode(f"{urllib.parse.quote(config['OIDC_CLIENT_ID'])}:"
                             f"{urllib.parse.quote(config.get('OIDC_CLIENT_SECRET') or '')}".encode()).decode()
    request = urllib.request.Request(discovery()["token_endpoint"], data=body, method="POST", headers={
        "Content-Type": "application/x-www-form-urlencoded", "Authorization": f"Basic {basic}",
        "Accept": "application/json"})
    token = _fetch(request)
    try:
        payload = token["id_token"].split(".")[1]
        found = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (KeyError, IndexError, ValueError) as exc:
        raise Forbidden("The identity provider sent no usable ID token.", code="oidc_token") from exc
    audience = found.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    problems = [name for name, ok in (("iss", found.get("iss", "").rstrip("/") == _issuer()),
                                      ("aud", config["OIDC_CLIENT_ID"] in audiences),
                                      ("exp", float(found.get("exp") or 0) > time.time()),
                                      ("nonce", found.get("nonce") == flow["nonce"])) if not ok]
    if problems:
        raise Forbidden(f"The ID token failed its checks ({', '.join(problems)}).", code="oidc_token")
    return found


def sign_in(session: Session, found: dict[str, Any]) -> ApiToken:
    """The pages token of the enabled Pilot user with the claims' e-mail address (a 403 otherwise)."""
    from pilot.users import _pages_token
    email = str(found.get("email") or "").strip().lower()
    if not email or found.get("email_verified") is False:
        raise Forbidden("The identity provider sent no verified e-mail address.", code="oidc_no_email")
    user = session.scalar(select(User).where(User.email == email))
    session.add(SignInAttempt(email=email[:254], succeeded=user is not None and user.disabled_at is None))
    if user is None or user.disabled_at is not None:
        raise Forbidden(f"{email} has no Pilot account (or it is disabled); ask an admin.", code="oidc_no_user")
    return _pages_token(session, user)
