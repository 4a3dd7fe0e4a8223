"""Web pages: token login into a signed HttpOnly cookie; forms need the CSRF token."""
from tests.factories import ALLOCATION, PROGRAMME, csrf, login


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


def test_pilot_pages_and_actions(client, tokens, auth):
    m = auth("manager")
    client.post("/api/v1/programmes", json=PROGRAMME, headers=m)
    client.post("/api/v1/pilots", json={"key": "pp", "name": "Page pilot", "programme": "loyalty", "stages": [
        {"store_codes": ["T001", "T002"], "allocation": ALLOCATION}]}, headers=m)
    login(client, tokens["manager"])
    listing = client.get("/pilots").get_data(as_text=True)
    assert "Page pilot" in listing and "draft" in listing
    page = client.get("/pilots/pp").get_data(as_text=True)
    assert "5% off every purchase with the card." in page and 'value="start"' in page
    token = csrf(client, "/pilots/pp")
    assert client.post("/pilots/pp/start").status_code == 400  # no CSRF token
    done = client.post("/pilots/pp/start", data={"csrf_token": token}, follow_redirects=True).get_data(as_text=True)
    assert "the pilot is now running" in done and "Region one (2)" in done
    refused = client.post("/pilots/pp/advance", data={"csrf_token": token}, follow_redirects=True)
    assert "Not done" in refused.get_data(as_text=True)
    assert client.get("/api/v1/pilots/pp", headers=m).json["state"] == "running"


def test_store_page_is_its_own_store_only(client, tokens):
    login(client, tokens["store"])
    assert client.get("/store").status_code == 200
    assert "takes part in no pilot" in client.get("/stores/T001").get_data(as_text=True)
    assert client.get("/stores/T002").status_code == 403
    assert client.get("/pilots").status_code == 403


def test_analyst_sees_pilots_without_actions(client, tokens, auth):
    client.post("/api/v1/programmes", json=PROGRAMME, headers=auth("manager"))
    client.post("/api/v1/pilots", json={"key": "pq", "name": "Q", "programme": "loyalty", "stages": [
        {"store_codes": ["T001"], "allocation": ALLOCATION}]}, headers=auth("manager"))
    login(client, tokens["analyst"])
    assert 'value="start"' not in client.get("/pilots/pq").get_data(as_text=True)
    assert client.post("/pilots/pq/start", data={"csrf_token": csrf(client, "/pilots/pq")}).status_code == 403
