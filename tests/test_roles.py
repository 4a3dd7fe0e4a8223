"""The role matrix: every API route has a rule, and every role gets exactly what the rule says."""
import re

import pytest

from pilot.auth import RULES
from pilot.cli import roles_markdown
from tests.conftest import ROLES

PLACEHOLDERS = {"code": "T001", "key": "nope", "external_id": "nope", "token_id": "999999", "position": "1", "batch_id": "999999", "run_id": "999999",
                "action": "pause", "approval_id": "999999", "verdict": "reject", "user_id": "999999",
                "webhook_id": "999999"}


def api_routes(app):
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1/"):
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                yield rule, method


def test_every_api_route_has_a_rule(app):
    routes = list(api_routes(app))
    assert len(routes) >= 20
    missing = [(r.endpoint, m) for r, m in routes if m not in RULES.get(r.endpoint, {})]
    assert missing == [], f"routes without a role rule in pilot/auth.py RULES: {missing}"
    stale = {(e, m) for e, ms in RULES.items() for m in ms} - {(r.endpoint, m) for r, m in routes}
    assert stale == set(), f"rules for routes that do not exist: {stale}"


def test_every_role_on_every_route(app, client, auth):
    checked = 0
    for rule, method in api_routes(app):
        path = re.sub(r"<(?:[^:>]+:)?(\w+)>", lambda m: PLACEHOLDERS[m.group(1)], rule.rule)
        if method in ("PATCH", "DELETE"):
            path = path.replace("T001", "NOSUCH")  # never change the fixtures the walk relies on
        for role in ROLES:
            response = client.open(path, method=method, headers=auth(role), json={})
            expected = role in RULES[rule.endpoint][method]
            if expected:
                assert response.status_code not in (401, 403), (role, method, path, response.json)
            else:
                assert response.status_code == 403, (role, method, path, response.status_code)
                assert response.json["error"]["code"] == "forbidden"
            checked += 1
    assert checked == len(list(api_routes(app))) * len(ROLES)


def test_store_token_sees_its_own_store_only(client, auth):
    assert client.get("/api/v1/stores/T001", headers=auth("store")).status_code == 200
    other = client.get("/api/v1/stores/T002", headers=auth("store"))
    assert other.status_code == 403 and other.json["error"]["code"] == "store_scope"
    assert client.get("/api/v1/stores", headers=auth("store")).status_code == 403


def test_docs_document_the_matrix():
    with open("docs/roles.md") as f:
        assert roles_markdown() in f.read(), "docs/roles.md is stale: run scripts/update_readme_roles.sh"


@pytest.mark.parametrize("role", ROLES)
def test_me(client, auth, role):
    me = client.get("/api/v1/me", headers=auth(role)).json
    assert me["role"] == role and me["store"] == ("T001" if role == "store" else None)
