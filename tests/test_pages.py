"""Web pages: token login into a signed HttpOnly cookie; forms need the CSRF token."""
import re


def csrf(client, path="/login"):
    page = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def test_login_requires_csrf_and_a_live_token(client, tokens):
    assert client.post("/login", data={"token": tokens["admin"]}).status_code == 400
    bad = client.post("/login", data={"token": "nope", "csrf_token": csrf(client)})
    assert bad.status_code == 401 and "unknown or revoked" in bad.get_data(as_text=True)
    ok = client.post("/login", data={"token": tokens["admin"], "csrf_token": csrf(client)})
    assert ok.status_code == 302
    cookie = ok.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and tokens["admin"] not in cookie
    page = client.get("/")
    assert page.status_code == 200 and "Overview" in page.get_data(as_text=True)


def test_pages_need_login_and_role(client, tokens):
    assert client.get("/").status_code == 302
    client.post("/login", data={"token": tokens["store"], "csrf_token": csrf(client)})
    assert client.get("/").status_code == 403


def test_logout_is_a_csrf_protected_post(client, tokens):
    client.post("/login", data={"token": tokens["analyst"], "csrf_token": csrf(client)})
    token = csrf(client, "/")
    assert client.post("/logout").status_code == 400
    assert client.get("/").status_code == 200
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/").status_code == 302


def test_open_redirect_is_refused(client, tokens):
    r = client.post("/login?next=//evil.example", data={"token": tokens["admin"], "csrf_token": csrf(client)})
    assert r.headers["Location"] == "/"


def test_session_cookie_does_not_authenticate_the_api(client, tokens):
    client.post("/login", data={"token": tokens["admin"], "csrf_token": csrf(client)})
    assert client.get("/api/v1/me").status_code == 401
