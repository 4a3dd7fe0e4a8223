"""People: accounts, password sign-in with a rate limit, one-time reset links, tokens that belong to a
user (the audit names the person), disabling that stops sessions and tokens at once, and the CLI."""
from __future__ import annotations

from urllib.parse import quote

import pytest
from sqlalchemy import select

from pilot.db import db
from pilot.models import AuditEvent, User
from pilot.users import hash_password, verify_password
from tests.factories import csrf

PASSWORD = "correct horse battery"


def make_user(client, admin, **over):
    body = {"name": "Ann Lee", "email": "Ann@Example.com", "role": "manager", "password": PASSWORD, **over}
    return client.post("/api/v1/users", json=body, headers=admin)


def sign_in(client, email, password):
    return client.post("/login", data={"email": email, "password": password, "csrf_token": csrf(client)})


def test_passwords_are_salted_scrypt_hashes():
    stored = hash_password(PASSWORD)
    assert stored.startswith("scrypt$16384$8$1$") and PASSWORD not in stored and stored != hash_password(PASSWORD)
    assert verify_password(stored, PASSWORD) and not verify_password(stored, PASSWORD + "!")
    assert not verify_password(None, PASSWORD) and not verify_password("garbage", PASSWORD)


def test_users_are_created_by_admins_with_fields_checked(client, admin, auth):
    made = make_user(client, admin)
    assert made.status_code == 201 and made.json["email"] == "ann@example.com" and made.json["has_password"]
    assert "password" not in made.json and "password_hash" not in made.json
    assert make_user(client, auth("manager")).status_code == 403
    assert make_user(client, admin).json["error"]["code"] == "email_taken"
    bad = make_user(client, admin, email="not-an-address")
    assert bad.status_code == 422 and "email" in bad.json["error"]["details"]["fields"]
    store = make_user(client, admin, email="till@example.com", role="store")
    assert store.status_code == 422 and "store" in store.json["error"]["details"]["fields"]
    assert make_user(client, admin, email="till@example.com", role="store", store="T001").json["store"] == "T001"
    short = make_user(client, admin, email="b@example.com", password="short")
    assert short.status_code == 422
    assert [u["email"] for u in client.get("/api/v1/users", headers=admin).json] == ["ann@example.com",
                                                                                    "till@example.com"]


def test_sign_in_with_a_password_and_the_audit_names_the_person(app, client, admin):
    user = make_user(client, admin).json
    assert sign_in(client, "ann@example.com", "wrong password!").status_code == 401
    ok = sign_in(client, "ANN@example.com", PASSWORD)
    assert ok.status_code == 302
    assert client.get("/pilots").status_code == 200
    token = client.post(f"/api/v1/users/{user['id']}/tokens", json={"name": "Ann's script"}, headers=admin).json
    r = client.post("/api/v1/regions", json={"code": "rz", "name": "Zed"},
                    headers={"Authorization": f"Bearer {token['token']}"})
    assert r.status_code == 201 and token["role"] == "manager"
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {token['token']}"}).status_code == 200
    with app.app_context():
        actor = db.session.scalar(select(AuditEvent.actor).where(AuditEvent.entity_type == "region"))
    assert actor == f"user:{user['id']}:ann@example.com"


def test_sign_in_is_rate_limited(client, admin):
    make_user(client, admin)
    for _ in range(5):
        assert sign_in(client, "ann@example.com", "not the password").status_code == 401
    limited = sign_in(client, "ann@example.com", PASSWORD)  # even the right password, for a while
    assert limited.status_code == 429 and "Too many failed sign-ins" in limited.get_data(as_text=True)
    assert sign_in(client, "other@example.com", "whatever else").status_code == 401  # per address


def test_a_one_time_reset_link_sets_a_password(app, client, admin, auth):
    user = make_user(client, admin, password=None).json
    assert not user["has_password"] and sign_in(client, "ann@example.com", "").status_code == 401
    assert client.post(f"/api/v1/users/{user['id']}/reset-link", headers=auth("manager")).status_code == 403
    link = client.post(f"/api/v1/users/{user['id']}/reset-link", headers=admin)
    assert link.status_code == 201 and link.headers["Cache-Control"] == "no-store"
    path = "/" + link.json["url"].split("/", 3)[3]
    form = {"password": "a new password", "confirm": "a new password", "csrf_token": csrf(client, path)}
    assert client.post(path, data={**form, "confirm": "different one"}).status_code == 422
    assert client.post(path, data=form).status_code == 302
    assert client.post(path, data=form).status_code == 422  # used once
    assert sign_in(client, "ann@example.com", "a new password").status_code == 302
    with app.app_context():
        stored = db.session.scalar(select(User.password_hash))
    assert "a new password" not in stored


def test_a_disabled_user_stops_at_once(app, client, admin):
    user = make_user(client, admin).json
    token = client.post(f"/api/v1/users/{user['id']}/tokens", json={"name": "cli"}, headers=admin).json["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    sign_in(client, "ann@example.com", PASSWORD)
    assert client.get("/pilots").status_code == 200 and client.get("/api/v1/me", headers=bearer).status_code == 200
    off = client.post(f"/api/v1/users/{user['id']}/disable", headers=admin)
    assert off.status_code == 200 and off.json["tokens_revoked"] == 2 and off.json["disabled_at"]
    assert client.get("/pilots").status_code == 302  # the session ended: back to the login
    assert client.get("/api/v1/me", headers=bearer).status_code == 401
    assert sign_in(client, "ann@example.com", PASSWORD).status_code == 401
    assert client.post(f"/api/v1/users/{user['id']}/tokens", json={"name": "x"}, headers=admin).status_code == 409


def test_users_cli(app):
    from pilot.cli import cli

    class Runner:
        def invoke(self, args):
            return app.test_cli_runner().invoke(cli, args)
    runner = Runner()
    made = runner.invoke(args=["users", "create", "--email", "bo@example.com", "--name", "Bo", "--role", "analyst",
                               "--reset-link"])
    assert made.exit_code == 0 and "created" in made.output and "/reset/" in made.output
    assert "bo@example.com\tanalyst" in runner.invoke(args=["users", "list"]).output
    bad = runner.invoke(args=["users", "create", "--email", "x", "--name", "X", "--role", "analyst"])
    assert bad.exit_code != 0 and "e-mail" in bad.output
    off = runner.invoke(args=["users", "disable", "bo@example.com"])
    assert off.exit_code == 0 and "disabled" in off.output
    assert "disabled" in runner.invoke(args=["users", "list"]).output


def test_the_demo_has_one_user_per_role_who_can_sign_in(app, client, tokens):
    from pilot.demo import demo_users
    with app.app_context():
        people = demo_users(db.session)
        db.session.commit()
    assert [role for _, role, _ in people] == ["admin", "manager", "analyst", "store", "feed"]
    email, _, password = people[1]
    assert sign_in(client, email, password).status_code == 302 and client.get("/pilots").status_code == 200
    feed = {"Authorization": f"Bearer {people[4][2]}"}
    assert client.get("/api/v1/me", headers=feed).json["role"] == "feed"


# the mock provider (a test dependency) calls authlib APIs that authlib deprecates; Pilot itself uses neither
@pytest.mark.filterwarnings("ignore::DeprecationWarning:authlib", "ignore::DeprecationWarning:oidc_provider_mock",
                            "ignore:authlib.jose module is deprecated", "ignore:The httpx module is deprecated")
def test_single_sign_on_against_a_local_openid_connect_provider(app, client, admin):
    provider = pytest.importorskip("oidc_provider_mock")
    import httpx
    with provider.run_server_in_thread(require_nonce=True) as server:
        issuer = f"http://localhost:{server.server_port}"
        app.config.update(OIDC_ISSUER=issuer, OIDC_CLIENT_ID="pilot", OIDC_CLIENT_SECRET="s3cret")
        user = make_user(client, admin, password=None).json
        for email in ("ann@example.com", "nobody@example.com"):
            assert httpx.put(f"{issuer}/users/{quote(email)}", json={"email": email, "name": email}).status_code == 204

        def sso(sub, next_path="/pilots"):
            assert "single sign-on" in client.get("/login").get_data(as_text=True)
            start = client.get(f"/login/sso?next={next_path}")
            assert start.status_code == 302 and start.location.startswith(issuer)
            back = httpx.post(start.location, data={"sub": sub})
            assert back.status_code in (302, 303), back.text
            return client.get(back.headers["location"].replace("http://localhost", ""))

        done = sso("ann@example.com")
        assert done.status_code == 302 and done.location.endswith("/pilots")
        assert client.get("/pilots").status_code == 200
        client.post("/logout", data={"csrf_token": csrf(client, "/pilots")})
        stranger = sso("nobody@example.com")
        assert stranger.status_code == 403 and "no Pilot account" in stranger.get_data(as_text=True)
        client.post(f"/api/v1/users/{user['id']}/disable", headers=admin)
        assert sso("ann@example.com").status_code == 403
        forged = client.get("/login/sso/callback?state=forged&code=x")
        assert forged.status_code == 403 and "start it again" in forged.get_data(as_text=True)
