"""The metrics API: the catalogue as it was, plus defined metrics — created, versioned, locked by live pilots."""
from __future__ import annotations

from sqlalchemy import select

from pilot.db import db
from pilot.metrics import catalogue
from pilot.models import AuditEvent
from tests.factories import pilot_body

BODY = {"key": "reviews_per_customer", "name": "Reviews per customer", "description": "Reviews written",
        "good_direction": "up", "kind": "mean", "source": "events", "type": "review", "aggregation": "count",
        "covariate": True}


def test_the_list_keeps_the_catalogue_and_adds_the_defined_metrics(client, auth):
    items = client.get("/api/v1/metrics", headers=auth("analyst")).json["items"]
    built_in = [i for i in items if i["origin"] == "built_in"]
    assert [{k: i[k] for k in ("key", "kind", "good_direction", "description")} for i in built_in] == catalogue()
    defined = {i["key"]: i for i in items if i["origin"] == "defined"}
    assert set(defined) == {"nps", "promoters_share", "app_sessions_per_customer", "referrals_per_customer",
                            "redeeming_share", "complaint_resolution_rate", "refund_rate"}
    assert defined["nps"]["spec"] == {"covariate": True, "source": "events", "type": "survey_nps",
                                      "filters": {}, "aggregation": "nps"} and defined["nps"]["version"] == 1
    assert defined["refund_rate"]["source"] == "transactions" and defined["refund_rate"]["good_direction"] == "down"


def test_define_read_and_change_a_metric(client, auth):
    m = auth("manager")
    r = client.post("/api/v1/metrics", json=BODY, headers=m)
    assert r.status_code == 201, r.json
    assert (r.json["version"], r.json["source"], r.json["locked"]) == (1, "events", None)
    assert client.post("/api/v1/metrics", json=BODY, headers=m).json["error"]["code"] == "metric_exists"
    p = client.patch(f"/api/v1/metrics/{BODY['key']}", json={"filters": {"stars": 5}, "covariate": None}, headers=m)
    assert p.status_code == 200, p.json
    assert p.json["version"] == 2 and p.json["spec"]["filters"] == {"stars": "5"} and not p.json["spec"]["covariate"]
    assert [v["version"] for v in p.json["versions"]] == [1, 2]
    one = client.get(f"/api/v1/metrics/{BODY['key']}", headers=auth("analyst")).json
    assert one == p.json
    # a shipped definition changes too: its version 1 is kept
    nps = client.patch("/api/v1/metrics/nps", json={"covariate": False}, headers=m).json
    assert nps["version"] == 2 and [v["version"] for v in nps["versions"]] == [1, 2]
    assert client.get("/api/v1/metrics/spend_per_customer", headers=m).json["origin"] == "built_in"
    assert client.patch("/api/v1/metrics/spend_per_customer", json={"name": "x"}, headers=m).status_code == 409
    assert client.get("/api/v1/metrics/nothing", headers=m).status_code == 404
    with client.application.app_context():
        actions = db.session.execute(select(AuditEvent.action, AuditEvent.entity_id)
                                     .where(AuditEvent.entity_type == "metric")).all()
        assert sorted(map(tuple, actions)) == sorted([("create", BODY["key"]), ("update", BODY["key"]), ("update", "nps")])


def paths(answer) -> list[str]:
    return [e["path"] for e in answer.json["error"]["details"]["errors"]]


def test_bad_definitions_answer_422_naming_the_field(client, auth):
    m = auth("manager")
    cases = [({**BODY, "aggregation": "median"}, "aggregation"), ({**BODY, "kind": "proportion"}, "aggregation"),
             ({**BODY, "source": "transactions"}, "type"), ({k: v for k, v in BODY.items() if k != "name"}, "name"),
             ({**BODY, "kind": "ratio"}, "numerator"),
             ({**BODY, "kind": "ratio", "source": None, "type": None, "aggregation": None,
               "numerator": {"source": "events", "type": "review", "aggregation": "sum"},
               "denominator": {"source": "transactions", "aggregation": "count"}}, "numerator.field")]
    for body, field in cases:
        r = client.post("/api/v1/metrics", json=body, headers=m)
        assert r.status_code == 422, (body, r.json)
        assert field in paths(r), (field, r.json)
    patch = client.patch("/api/v1/metrics/nps", json={"aggregation": "sum"}, headers=m)
    assert patch.status_code == 422 and paths(patch) == ["field"]


def test_roles(client, auth):
    assert client.post("/api/v1/metrics", json=BODY, headers=auth("analyst")).status_code == 403
    assert client.patch("/api/v1/metrics/nps", json={"name": "N"}, headers=auth("analyst")).status_code == 403
    assert client.get("/api/v1/metrics/nps", headers=auth("store")).status_code == 403
    assert client.post("/api/v1/metrics", json=BODY, headers=auth("admin")).status_code == 201


def test_a_pilot_takes_a_defined_metric_and_locks_it_while_live(client, world, auth):
    m = world
    client.post("/api/v1/metrics", json=BODY, headers=m)
    body = pilot_body(primary_metric="nps", guardrails=[{"metric": BODY["key"], "max_harm": 0.05}])
    r = client.post("/api/v1/pilots", json=body, headers=m)
    assert r.status_code == 201, r.json
    unknown = client.post("/api/v1/pilots", json=pilot_body(key="p2", primary_metric="no_such_metric"), headers=m)
    assert unknown.status_code == 422 and "primary_metric" in unknown.json["error"]["details"]["fields"]
    client.post("/api/v1/pilots/p1/start", json={}, headers=m)
    for key in ("nps", BODY["key"]):
        locked = client.patch(f"/api/v1/metrics/{key}", json={"description": "changed"}, headers=m)
        assert locked.status_code == 409 and locked.json["error"]["code"] == "analysis_plan_locked", locked.json
        assert locked.json["error"]["details"]["pilots"] == ["p1"]
    shown = client.get("/api/v1/metrics/nps", headers=m).json
    assert shown["live_pilots"] == ["p1"] and "plan amendment" in shown["locked"]
    amended = client.patch("/api/v1/metrics/nps", json={"description": "changed", "reason": "wording"}, headers=m)
    assert amended.status_code == 200 and amended.json["version"] == 2
    plan = client.get("/api/v1/pilots/p1/analysis-plan", headers=m).json
    assert plan["plan_version"] == 2 and plan["versions"][-1]["reason"] == "wording", plan
