"""Customer groups: ordered rules, first match wins, counted in the database."""
import random

import pytest

from pilot.synthetic import GROUPS

OPS = {"eq": lambda a, v: a == v, "ne": lambda a, v: a != v, "in": lambda a, v: a in v,
       "lt": lambda a, v: a < v, "le": lambda a, v: a <= v, "gt": lambda a, v: a > v, "ge": lambda a, v: a >= v,
       "between": lambda a, v: v[0] <= a <= v[1]}


def expected_group(customer, groups):
    """The rules evaluated in plain Python on one raw row: the reference for the SQL."""
    def value(attr):
        return customer.get(attr, customer.get("attributes", {}).get(attr))

    def holds(rule):
        a = value(rule["attribute"])
        if rule["op"] == "exists":
            return (a is not None) == (rule.get("value") is not False)
        return a is not None and OPS[rule["op"]](a, rule["value"])

    for g in groups:
        if all(holds(r) for r in g["rules"]):
            return g["key"]
    return "other"


@pytest.fixture
def customers(client, auth):
    rng = random.Random(3)
    rows = []
    for i in range(600):
        row = {"external_id": f"g{i}", "home_store": "T001"}
        if rng.random() < 0.9:
            row["age_band"] = rng.choice(["18-24", "25-34", "35-44", "45-54", "55-64", "65+"])
        if rng.random() < 0.9:
            row["children"] = rng.choice([0, 0, 1, 2, 3])
            row["household_size"] = row["children"] + rng.choice([1, 1, 2])
        row["attributes"] = {k: v for k, v in {"spend": rng.choice([None, 10.5, 99, 250.0]),
                                               "channel": rng.choice([None, "web", "store"])}.items() if v is not None}
        rows.append(row)
    assert client.post("/api/v1/customers", json={"customers": rows}, headers=auth("feed")).status_code == 200
    return rows


EXTRA = [
    {"key": "big_web", "name": "Big web", "rules": [{"attribute": "channel", "op": "eq", "value": "web"},
                                                    {"attribute": "spend", "op": "between", "value": [50, 300]}]},
    {"key": "no_channel", "name": "No channel", "rules": [{"attribute": "channel", "op": "exists", "value": False}]},
    {"key": "mid", "name": "Mid", "rules": [{"attribute": "age_band", "op": "ne", "value": "65+"},
                                            {"attribute": "household_size", "op": "lt", "value": 3}]},
]


@pytest.mark.parametrize("groups", [GROUPS, EXTRA + GROUPS, list(reversed(GROUPS)), []])
def test_preview_counts_match_python_on_raw_rows(client, auth, customers, groups):
    want = {g["key"]: 0 for g in groups} | {"other": 0}
    for c in customers:
        want[expected_group(c, groups)] += 1
    got = client.post("/api/v1/customer-groups/preview", json={"groups": groups}, headers=auth("analyst")).json
    assert got == {"counts": want, "total": len(customers)}


def test_saved_groups_keep_order_and_preview_uses_them(client, auth, customers):
    m = auth("manager")
    for g in GROUPS:
        assert client.post("/api/v1/customer-groups", json=g, headers=m).status_code == 201
    first = {**EXTRA[2], "position": 1}
    assert client.post("/api/v1/customer-groups", json=first, headers=m).json["position"] == 1
    keys = [g["key"] for g in client.get("/api/v1/customer-groups", headers=m).json["items"]]
    assert keys == ["mid"] + [g["key"] for g in GROUPS]
    saved = client.post("/api/v1/customer-groups/preview", json={}, headers=m).json["counts"]
    assert saved["mid"] == sum(expected_group(c, [EXTRA[2]] + GROUPS) == "mid" for c in customers)
    assert client.patch("/api/v1/customer-groups/mid", json={"position": 5}, headers=m).json["position"] == 5
    keys = [g["key"] for g in client.get("/api/v1/customer-groups", headers=m).json["items"]]
    assert keys[-1] == "mid" and [g["position"] for g in client.get("/api/v1/customer-groups", headers=m).json["items"]] == [1, 2, 3, 4, 5]
    assert client.delete("/api/v1/customer-groups/young_parents", headers=m).status_code == 204
    positions = [g["position"] for g in client.get("/api/v1/customer-groups", headers=m).json["items"]]
    assert positions == [1, 2, 3, 4]


@pytest.mark.parametrize("rule, field", [
    ({"attribute": "age_band", "op": "like", "value": "x"}, "op"),
    ({"attribute": "children", "op": "gt", "value": "two"}, "value"),
    ({"attribute": "children", "op": "between", "value": [5, 1]}, "value"),
    ({"attribute": "age_band", "op": "in", "value": []}, "value"),
    ({"attribute": "age_band", "op": "eq"}, "value"),
    ({"attribute": "", "op": "exists"}, "attribute"),
])
def test_bad_rules_are_named(client, auth, rule, field):
    r = client.post("/api/v1/customer-groups", json={"key": "bad", "name": "Bad", "rules": [rule]},
                    headers=auth("manager"))
    assert r.status_code == 422
    assert field in r.json["error"]["details"]["fields"]["json"]["rules"]["0"]


def test_group_key_rules(client, auth):
    m = auth("manager")
    assert client.post("/api/v1/customer-groups", json={"key": "other", "name": "x"}, headers=m).status_code == 422
    assert client.post("/api/v1/customer-groups", json={"key": "a", "name": "x"}, headers=m).status_code == 201
    assert client.post("/api/v1/customer-groups", json={"key": "a", "name": "x"}, headers=m).status_code == 409
    assert client.patch("/api/v1/customer-groups/a", json={"key": "b"}, headers=m).status_code == 422
    dup = client.post("/api/v1/customer-groups/preview", json={"groups": [{"key": "a"}, {"key": "a"}]}, headers=m)
    assert dup.status_code == 422


def test_group_list_is_paginated_in_order(client, auth):
    m = auth("manager")
    for g in GROUPS:
        client.post("/api/v1/customer-groups", json=g, headers=m)
    first = client.get("/api/v1/customer-groups?limit=3", headers=m).json
    rest = client.get(f"/api/v1/customer-groups?limit=3&cursor={first['next_cursor']}", headers=m).json
    assert [g["key"] for g in first["items"] + rest["items"]] == [g["key"] for g in GROUPS]
    assert rest["next_cursor"] is None
