"""A pilot's salt for outside systems, the variant order the README states, and past planned starts."""
from __future__ import annotations

import hashlib
import re
from datetime import date, timedelta
from pathlib import Path

from pilot.bucketing import bucket, choose
from tests.factories import assign, pilot_body

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def test_the_salt_is_returned_to_admins_and_managers_and_reproduces_every_assignment(client, running, auth):
    for role in ("admin", "manager"):
        assert client.get("/api/v1/pilots/p1", headers=auth(role)).json["salt"]
    for role in ("analyst", "feed"):
        assert "salt" not in client.get("/api/v1/pilots/p1", headers=auth(role)).json
    pilot = client.get("/api/v1/pilots/p1", headers=running).json
    allocation = pilot["stages"][0]["allocation"]
    for i in range(0, 60, 3):  # customers of region ra, enrolled
        got = assign(client, auth("feed"), f"c{i}").json
        assert got["assigned"] and got["variant"]["key"] == choose(allocation, bucket(pilot["salt"], f"c{i}"))


def test_the_readme_states_the_bucketing_the_code_uses():
    formula = re.search(r"Bucketing is\s+`(int\(sha256\(\"<salt>:<unit id>\"\)[^`]+)`", README).group(1)
    readme_bucket = eval(formula.replace('sha256("<salt>:<unit id>")', "hashlib.sha256(text.encode())"),
                         {"hashlib": hashlib, "text": "s4lt:C000123"})
    assert readme_bucket == bucket("s4lt", "C000123")
    stated = README[README.index(formula):][:300]
    assert "in key order (sorted, whatever the allocation's order" in " ".join(stated.split())
    # an allocation listed out of key order: ranges still go control, discount, tiers
    allocation = {"tiers": 0.2, "discount": 0.3, "control": 0.5}
    assert [choose(allocation, p) for p in (0.1, 0.49, 0.5, 0.79, 0.8, 0.99)] == \
        ["control", "control", "discount", "discount", "tiers", "tiers"]


def test_a_past_planned_start_is_refused_with_the_field_named(client, world):
    yesterday, today = (date.today() - timedelta(days=1)).isoformat(), date.today().isoformat()
    body = pilot_body()
    body["stages"][0]["planned_start"] = yesterday
    r = client.post("/api/v1/pilots", json=body, headers=world)
    assert r.status_code == 422 and r.json["error"]["code"] == "planned_start_in_past"
    assert list(r.json["error"]["details"]["fields"]) == ["stages.1.planned_start"]
    assert "POST /api/v1/pilots/import" in r.json["error"]["message"]
    body["stages"][0]["planned_start"] = today
    assert client.post("/api/v1/pilots", json=body, headers=world).status_code == 201
    patched = client.patch("/api/v1/pilots/p1/stages/2", json={"planned_start": yesterday}, headers=world)
    assert patched.status_code == 422 and "stages.2.planned_start" in patched.json["error"]["details"]["fields"]
    added = client.post("/api/v1/pilots/p1/stages", json={"region_codes": ["rc"], "allocation": body["stages"][0][
        "allocation"], "planned_start": yesterday}, headers=world)
    assert added.status_code == 422 and added.json["error"]["code"] == "planned_start_in_past"
    # a started stage keeps its dates: editing its other fields later is not refused
    assert client.post("/api/v1/pilots/p1/start", json={}, headers=world).status_code == 200
    assert client.patch("/api/v1/pilots/p1/stages/1", json={"name": "Renamed"}, headers=world).status_code == 200
