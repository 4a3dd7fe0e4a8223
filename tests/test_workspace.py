"""The manager workspace's pages without a browser: forms generated from the domain's schemas, every problem
of a submission at once, live previews, read-only reasons, background assignment, admin pages."""
from __future__ import annotations

import re
import time
from datetime import date, timedelta

import pytest
from sqlalchemy import func, select

from pilot.db import db
from pilot.mechanic_fields import field_specs
from pilot.mechanics import SCHEMAS
from pilot.models import Assignment, AuditEvent
from tests.factories import csrf, login

SEED = {"key": "seed", "name": "Seed card", "v-0-key": "control", "v-0-mechanic": "control",
        "v-1-key": "card5", "v-1-name": "5% card", "v-1-mechanic": "fixed_discount", "v-1-fixed_discount-rate": "5",
        "v-4-key": "tiers", "v-4-mechanic": "tiered",
        **{f"v-4-tiered-tiers-{r}-{c}": v for r, row in enumerate((("silver", "0", "2"), ("gold", "500", "5"),
                                                                   ("platinum", "1500", "8")))
           for c, v in zip(("name", "threshold", "discount_rate"), row)}}


@pytest.fixture
def manager(client, world, tokens):
    login(client, tokens["manager"])
    return csrf(client, "/programmes/new")


def _summary(page: str) -> list[str]:
    return re.findall(r'<small class="text-body-secondary">\(([^)]*)\)</small></li>', page)


def test_each_mechanic_shows_exactly_its_schemas_parameters(client, manager):
    page = client.get("/programmes/new").get_data(as_text=True)
    for mechanic, schema in SCHEMAS.items():
        block = page.split(f'<div data-mechanic="{mechanic}"', 1)[1].split("<div data-mechanic=", 1)[0]
        shown = set(re.findall(rf'name="v-0-{mechanic}-([a-z_]+?)(?:-\d+-[a-z_]+)?"', block))
        assert shown == set(schema().fields), mechanic
    assert [s.kind for s in field_specs("fixed_discount")] == ["percent"]
    assert [c.name for c in field_specs("tiered")[0].columns] == ["name", "threshold", "discount_rate"]


def test_a_programme_made_in_the_form_is_what_the_api_validates(client, manager, auth):
    r = client.post("/programmes/preview", data={"csrf_token": manager, **SEED})
    texts = [v["description"] for v in r.json["variants"]]
    assert texts[1] == "5% off every purchase with the card." and "platinum from 1,500 spent: 8% off" in texts[2]
    r = client.post("/programmes/new", data={"csrf_token": manager, **SEED})
    assert r.status_code == 302
    stored = client.get("/api/v1/programmes/seed", headers=auth("manager")).json
    assert stored["variants"][1]["parameters"] == {"rate": 0.05}
    assert stored["variants"][2]["parameters"]["tiers"][2] == {"name": "platinum", "threshold": 1500.0,
                                                              "discount_rate": 0.08}
    assert client.get("/programmes/seed").status_code == 200
    form = client.get("/pilots/new?programme=seed").get_data(as_text=True)
    weights = [float(w) for w in re.findall(r'name="s-0-w-[a-z0-9]+" value="([0-9.]+)"', form)]
    assert len(weights) == 3 and abs(sum(weights) - 100) < 1e-9  # a new stage starts at 100%


def test_every_programme_problem_is_shown_at_once_with_the_apis_paths(client, manager):
    bad = {**SEED, "key": "has space", "v-1-fixed_discount-rate": "90", "v-4-tiered-tiers-1-threshold": "lots",
           "v-4-tiered-tiers-2-name": ""}
    r = client.post("/programmes/new", data={"csrf_token": manager, **bad})
    assert r.status_code == 422
    page = r.get_data(as_text=True)
    assert _summary(page) == ["key", "variants[1].parameters.rate", "variants[2].parameters.tiers[1].threshold"]
    assert "In percent, more than 0% and at most 50%." in page and 'aria-invalid="true"' in page
    bad["v-4-tiered-tiers-1-threshold"] = "500"
    page = client.post("/programmes/new", data={"csrf_token": manager, **bad}).get_data(as_text=True)
    assert "variants[2].parameters.tiers[2].name" in _summary(page)  # the schema's own messages, by path


def test_a_programme_in_a_live_pilot_is_read_only_with_the_reason(client, running, tokens, auth):
    login(client, tokens["manager"])
    page = client.get("/programmes/loyalty").get_data(as_text=True)
    assert "Read-only:" in page and "pilot p1 of it is running or paused" in page and "<fieldset disabled>" in page
    token = csrf(client, "/programmes/loyalty")
    r = client.post("/programmes/loyalty", data={"csrf_token": token, "name": "Renamed", "v-0-key": "control",
                                                 "v-0-mechanic": "control"})
    assert r.status_code == 302
    assert client.get("/api/v1/programmes/loyalty", headers=auth("manager")).json["name"] == "Loyalty card"
    login(client, tokens["analyst"])
    assert "only managers and admins" in client.get("/programmes/loyalty").get_data(as_text=True) or \
        "Read-only" in client.get("/programmes/loyalty").get_data(as_text=True)


def test_group_preview_counts_alone_and_in_the_lists_order(client, running, tokens, auth):
    login(client, tokens["manager"])
    token = csrf(client, "/groups/new")
    kids = {"csrf_token": token, "key": "kids", "name": "With children", "position": "1",
            "r-0-attribute": "children", "r-0-op": "ge", "r-0-value": "1"}
    before = client.post("/api/v1/customer-groups/preview", json={}, headers=auth("analyst")).json["counts"]
    answer = client.post("/groups/preview", data=kids).json
    out = {o["selector"]: o["text"] for o in answer["outputs"]}
    alone = client.post("/api/v1/customer-groups/preview", json={"groups": [
        {"key": "kids", "rules": [{"attribute": "children", "op": "ge", "value": 1}]}]}, headers=auth("analyst")).json
    assert out["#preview-alone"] == out["#preview-in-list"] == f"{alone['counts']['kids']:,}"
    assert int(out['[data-count-for="seniors"]']) < before["seniors"]  # first match: seniors with children moved
    last = client.post("/groups/preview", data={**kids, "position": "2"}).json
    out = {o["selector"]: o["text"] for o in last["outputs"]}
    assert int(out["#preview-in-list"]) < alone["counts"]["kids"] and out['[data-count-for="seniors"]'] == \
        str(before["seniors"])
    typo = client.post("/groups/preview", data={**kids, "r-0-attribute": "chidlren"}).json
    assert [w["path"] for w in typo["warnings"]] == ["rules[0].attribute"]
    assert client.post("/groups/new", data=kids).status_code == 302
    page = client.get("/groups").get_data(as_text=True)
    assert page.index("With children") < page.index("Seniors")
    assert client.post("/groups/kids/move", data={"csrf_token": token, "direction": "down"}).status_code == 302
    page = client.get("/groups").get_data(as_text=True)
    assert page.index("Seniors") < page.index("With children")
    bad = client.post("/groups/new", data={**kids, "key": "x", "r-0-op": "between", "r-0-value": "3, 1"})
    assert bad.status_code == 422 and "rules[0].value" in bad.get_data(as_text=True)


def test_the_editor_offers_the_attributes_in_the_data(client, world, tokens, auth):
    rows = [{"external_id": "a1", "home_store": "ra0", "attributes": {"pet": "dog"}},
            {"external_id": "a2", "home_store": "ra0", "age_band": "25-34", "attributes": {"pet": "cat", "vip": True}}]
    assert client.post("/api/v1/customers", json={"customers": rows}, headers=auth("feed")).status_code == 200
    login(client, tokens["manager"])
    page = client.get("/groups/new").get_data(as_text=True)
    assert '<option value="pet">pet (2 customers)</option>' in page and '<option value="vip">vip (1 customers)' in page
    assert '<option value="age_band">age_band (1 customers)</option>' in page


def _pilot_form(token: str, **over) -> dict:
    start = (date.today() + timedelta(days=2)).isoformat()
    form = {"csrf_token": token, "programme": "loyalty", "key": "seed", "name": "Seed pilot", "unit": "customer",
            "layer": "default", "primary_metric": "spend_per_customer", "alpha": "0.05", "power": "0.8", "mde": "2",
            "margin_rate": "30", "g-spend_per_visit": "on", "gh-spend_per_visit": "2",
            "s-0-name": "Two regions", "s-0-region": ["ra", "rb"], "s-0-start": start,
            "s-0-gate-min_days": "14", "s-0-gate-min_units_per_arm": "100", "s-0-gate-require_significant": "on",
            "s-2-name": "All", "s-2-region": ["ra", "rb", "rc"]}
    for s in (0, 2):
        form.update({f"s-{s}-w-{v}": "25" for v in ("control", "discount", "tiers", "bonus")})
    return {**form, **over}


def test_every_pilot_problem_is_shown_at_once_next_to_its_field(client, manager, auth):
    bad = _pilot_form(manager, name="", alpha="2", mde="x", **{"s-0-w-bonus": "20", "s-0-end": "2020-01-01",
                                                                "s-2-region": ["zz"], "s-2-w-control": "0"})
    r = client.post("/pilots/new", data=bad)
    assert r.status_code == 422
    page = r.get_data(as_text=True)
    assert _summary(page) == ["mde", "name", "alpha", "stages[0].allocation", "stages[0].planned_end",
                              "stages[1].allocation", "stages[1].allocation", "stages[1].region_codes"]
    for field in ("name", "alpha", "mde", "s-0-allocation", "s-0-end", "s-2-allocation", "s-2-region"):
        assert f'id="{field}-error"' in page, field
    assert client.get("/api/v1/pilots/seed", headers=auth("manager")).status_code == 404


def test_a_draft_is_saved_edited_until_it_starts_then_only_its_weights_change(client, manager, auth, app):
    assert client.post("/pilots/new", data=_pilot_form(manager)).status_code == 302
    pilot = client.get("/api/v1/pilots/seed", headers=auth("manager")).json
    assert [s["region_codes"] for s in pilot["stages"]] == [["ra", "rb"], ["ra", "rb", "rc"]]
    assert pilot["guardrails"] == [{"metric": "spend_per_visit", "max_harm": 0.02}] and pilot["mde"] == 0.02
    assert pilot["stages"][0]["gate"]["min_units_per_arm"] == 100
    edit = client.get("/pilots/seed/edit").get_data(as_text=True)
    assert 'name="s-1-w-bonus" value="25"' in edit and 'value="ra" id="s-1-region-ra" checked' in edit
    form = _pilot_form(manager, **{"s-0-w-control": "40", "s-0-w-bonus": "10"})
    form = {k.replace("s-2-", "s-1-"): v for k, v in form.items()}
    form.update({"s-2-name": "Three", "s-2-region": ["rc"], **{f"s-2-w-{v}": "25" for v in
                                                            ("control", "discount", "tiers", "bonus")}})
    assert client.post("/pilots/seed/edit", data=form).status_code == 302
    pilot = client.get("/api/v1/pilots/seed", headers=auth("manager")).json
    assert pilot["stages"][0]["allocation"]["control"] == 0.4 and len(pilot["stages"]) == 3
    client.post("/pilots/seed/start", data={"csrf_token": manager})
    _wait(client, "seed", 1)
    assert client.get("/pilots/seed/edit").status_code == 302
    r = client.post("/pilots/seed/weights", data={"csrf_token": manager, "w-control": "25", "w-discount": "25",
                                                  "w-tiers": "25", "w-bonus": "25"})
    assert r.status_code == 302
    page = client.get("/pilots/seed").get_data(as_text=True)
    assert "Allocation log" in page and "control 40%" in page and "Now: " in page
    assert "Only the weights can change now" in page
    assert "<code>allocation.control</code>: 0.4 → 0.25" in page  # the timeline says what changed
    bad = client.post("/pilots/seed/weights", data={"csrf_token": manager, "w-control": "50", "w-discount": "25",
                                                    "w-tiers": "0", "w-bonus": "0"})
    assert bad.status_code == 302 and "must add up to 100%" in client.get("/pilots/seed").get_data(as_text=True)


def test_the_forms_live_counts_and_another_layers_pilot(client, running, tokens):
    login(client, tokens["manager"])
    token = csrf(client, "/pilots/new?programme=loyalty")
    out = {o["selector"]: o["text"] for o in client.post("/pilots/form-preview", data=_pilot_form(
        token, layer="promo", **{"s-0-group": ["seniors"]})).json["outputs"]}
    assert out["#s-0-count"].startswith("16 stores, 200 customers with their home store there, 100 of them")
    assert out["#s-0-total"] == "100% ✓"
    assert "Pilot p1 (layer default) is live in 16 of these stores" in out["#s-0-layer"]


def _wait(client, key: str, stage: int) -> dict:
    for _ in range(200):
        progress = client.get(f"/pilots/{key}/assignment-progress").json
        if progress["status"] == "done" and progress["stage"] == stage:
            return progress
        time.sleep(0.05)
    raise AssertionError(progress)


def test_start_and_advance_assign_the_new_scope_in_the_background(client, world, tokens, auth, app):
    customers = [{"external_id": f"c{i}", "home_store": f"r{'abc'[i % 3]}{i % 8}"} for i in range(90)]
    assert client.post("/api/v1/customers", json={"customers": customers}, headers=auth("feed")).status_code == 200
    login(client, tokens["manager"])
    token = csrf(client, "/pilots/new?programme=loyalty")
    assert client.post("/pilots/new", data=_pilot_form(token)).status_code == 302
    client.post("/pilots/seed/start", data={"csrf_token": token})
    first = _wait(client, "seed", 1)
    assert first["assigned_now"] == first["assigned_in_stage"] == 60
    client.post("/pilots/seed/advance", data={"csrf_token": token, "override": "1", "reason": "test"})
    second = _wait(client, "seed", 2)
    assert second["assigned_in_stage"] == 30
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Assignment)) == 90
    page = client.get("/pilots/seed").get_data(as_text=True)
    assert "Stage 2's customers are assigned: 30 new" in page and "All stages" in page
    assert client.post("/pilots/seed/assign", data={"csrf_token": token}).status_code == 302
    assert _wait(client, "seed", 2)["assigned_now"] in (0, None)
    login(client, tokens["analyst"])
    assert client.get("/pilots/seed/assignment-progress").json["status"] == "done"
    assert client.post("/pilots/seed/assign", data={"csrf_token": csrf(client, "/pilots")}).status_code == 403


def test_admins_create_and_revoke_tokens_and_read_the_audit_log(client, running, tokens, app):
    login(client, tokens["admin"])
    token = csrf(client, "/admin/tokens")
    r = client.post("/admin/tokens", data={"csrf_token": token, "name": "CRM export", "role": "feed"})
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    secret = re.search(r'<code class="fs-5" id="secret">(plt_[^<]+)</code>', page).group(1)
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"}).json["role"] == "feed"
    refused = client.post("/admin/tokens", data={"csrf_token": token, "name": "Till", "role": "store"})
    assert refused.status_code == 422 and "A store token needs a store." in refused.get_data(as_text=True)
    assert client.post("/admin/tokens", data={"csrf_token": token, "name": "Till", "role": "store",
                                              "store": "T001"}).status_code == 200
    with app.app_context():
        crm = db.session.scalar(select(AuditEvent.entity_id).where(AuditEvent.action == "create",
                                                                   AuditEvent.entity_type == "api_token"))
    assert client.post(f"/admin/tokens/{crm}/revoke", data={"csrf_token": token}).status_code == 302
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"}).status_code == 401
    page = client.get("/admin/tokens").get_data(as_text=True)
    assert "revoked" in page and "live (yours)" in page
    audit = client.get("/admin/audit", query_string={"entity_type": "api_token", "action": "revoke"})
    text = audit.get_data(as_text=True)
    assert "<code>revoked_at</code>: <em>none</em> →" in text and text.count("revoke api_token") == 1
    assert "start pilot" not in text
    assert "<code>state</code>: draft → running" in client.get("/admin/audit?entity_type=pilot").get_data(as_text=True)
    assert "No event matches" in client.get("/admin/audit?since=2999-01-01").get_data(as_text=True)
    login(client, tokens["manager"])
    assert client.get("/admin/tokens").status_code == 403 and client.get("/admin/audit").status_code == 403


def test_a_draft_loses_a_stage_and_a_variant_in_the_form(client, manager, auth, app):
    form = _pilot_form(manager)
    form.update({"s-3-name": "Three", "s-3-region": ["rc"], **{f"s-3-w-{v}": "25" for v in
                                                              ("control", "discount", "tiers", "bonus")}})
    assert client.post("/pilots/new", data=form).status_code == 302
    assert len(client.get("/api/v1/pilots/seed", headers=auth("manager")).json["stages"]) == 3
    edit = client.get("/pilots/seed/edit").get_data(as_text=True)
    assert edit.count("data-remove-stage>Remove this stage") == 4  # each stored stage (and the template)
    form = {k: v for k, v in form.items() if not k.startswith("s-2-")}  # stage 2 removed
    form.update({"s-0-out-tiers": "on", "s-0-w-tiers": "25", "s-0-w-control": "50"})  # tiers left out of stage 1
    assert client.post("/pilots/seed/edit", data=form).status_code == 302
    pilot = client.get("/api/v1/pilots/seed", headers=auth("manager")).json
    assert [s["name"] for s in pilot["stages"]] == ["Two regions", "Three"]
    assert pilot["stages"][0]["allocation"] == {"control": 0.5, "discount": 0.25, "bonus": 0.25}
    assert pilot["stages"][1]["region_codes"] == ["rc"] and len(pilot["stages"][1]["allocation"]) == 4
    with app.app_context():
        gone = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "delete",
                                                           AuditEvent.entity_type == "stage")).all()
        assert [(e.entity_id, e.before["name"]) for e in gone] == [("seed/3", "Three")]
    edit = client.get("/pilots/seed/edit").get_data(as_text=True)
    assert re.search(r'name="s-0-w-tiers" value="0" data-weight disabled>', edit)
    assert 'name="s-0-out-tiers" data-leave-out checked>' in edit and 'name="s-1-out-tiers" data-leave-out>' in edit
    # every stage gone: the form says so, nothing changes
    bare = {k: v for k, v in form.items() if not k.startswith("s-")}
    r = client.post("/pilots/seed/edit", data=bare)
    assert r.status_code == 422 and "A pilot needs at least one stage." in r.get_data(as_text=True)
    assert len(client.get("/api/v1/pilots/seed", headers=auth("manager")).json["stages"]) == 2


def test_patch_replaces_a_drafts_stages_and_refuses_a_started_pilots(client, world, auth, app):
    from tests.factories import ALLOCATION, act, pilot_body
    assert client.post("/api/v1/pilots", json=pilot_body(), headers=world).status_code == 201
    first = pilot_body()["stages"][0]
    three = {"name": "Three", "region_codes": ["rc"], "allocation": {"control": 0.5, "bonus": 0.5}}
    r = client.patch("/api/v1/pilots/p1", json={"name": "Renamed", "stages": [first, three]}, headers=world)
    assert r.status_code == 200, r.json
    assert r.json["name"] == "Renamed" and [s["name"] for s in r.json["stages"]] == ["Two regions", "Three"]
    assert r.json["stages"][1]["allocation"] == {"control": 0.5, "bonus": 0.5}  # tiers, discount dropped
    r = client.patch("/api/v1/pilots/p1", json={"stages": [first]}, headers=world)
    assert [s["position"] for s in r.json["stages"]] == [1]
    bad = {**three, "region_codes": ["zz"], "allocation": {"control": 0.5, "nope": 0.4}}
    r = client.patch("/api/v1/pilots/p1", json={"name": "Not saved", "stages": [first, bad]}, headers=world)
    assert r.status_code == 422
    assert [e["path"] for e in r.json["error"]["details"]["errors"]] == [
        "stages[1].allocation", "stages[1].allocation", "stages[1].region_codes"]  # every problem, by path
    pilot = client.get("/api/v1/pilots/p1", headers=world).json
    assert pilot["name"] == "Renamed" and len(pilot["stages"]) == 1
    assert client.patch("/api/v1/pilots/p1", json={"stages": []}, headers=world).status_code == 422
    r = client.patch("/api/v1/pilots/p1", json={"stages": [first, {**three, "allocation": ALLOCATION}]}, headers=world)
    assert r.status_code == 200 and len(r.json["stages"]) == 2
    assert act(client, world, "p1", "start", assign=False).status_code == 200
    r = client.patch("/api/v1/pilots/p1", json={"stages": [first]}, headers=world)
    assert r.status_code == 409 and r.json["error"]["code"] == "locked_when_live"
    assert "the running stage keeps its stores and variants" in r.json["error"]["message"]
    # the running stage: weights change (logged), variants and scope do not, with the reason
    r = client.patch("/api/v1/pilots/p1/stages/1", json={"allocation": {"control": 0.4, "discount": 0.2, "tiers": 0.2,
                                                                        "bonus": 0.2}}, headers=world)
    assert r.status_code == 200 and r.json["allocation_log"][0]["allocation"] == ALLOCATION
    r = client.patch("/api/v1/pilots/p1/stages/1", json={"allocation": {"control": 0.5, "bonus": 0.5}}, headers=world)
    assert r.status_code == 409 and r.json["error"]["code"] == "running_stage_variants"
    r = client.patch("/api/v1/pilots/p1/stages/1", json={"region_codes": ["ra"]}, headers=world)
    assert r.status_code == 409 and r.json["error"]["code"] == "running_stage_scope"


def _limits(schema) -> dict:
    """Each field's type, whether required, and its validators' limits (regex, lengths, ranges, choices)."""
    def of(field):
        checks = []
        for v in field.validators:
            checks.append(tuple(sorted((k, str(getattr(v, k))) for k in ("regex", "min", "max", "choices", "iterable")
                                       if hasattr(v, k) and not callable(getattr(v, k)))))
        inner = getattr(field, "inner", None) or getattr(field, "value_field", None)
        nested = getattr(field, "nested", None) or getattr(inner, "nested", None)
        return (type(field).__name__, field.required, tuple(checks), of(inner) if inner else None,
                _limits(nested) if nested else None)
    return {name: of(field) for name, field in schema().fields.items()}


def test_the_forms_validate_with_the_apis_own_fields_and_limits(client, manager):
    from pilot.api import customer_groups, pilots, programmes, regions
    from pilot.input_schema import CODE, GROUP_KEY
    from pilot.setup_schemas import GroupIn, ProgrammeIn
    # one set of input schemas: the API's programme and group inputs are the forms' own
    assert programmes.ProgrammeIn is ProgrammeIn and customer_groups.GroupIn is GroupIn
    assert _limits(ProgrammeIn)["key"] and _limits(GroupIn)["key"]
    assert pilots.PilotIn is __import__("pilot.pilot_schemas").pilot_schemas.PilotIn
    assert regions.CODE.regex.pattern == CODE.regex.pattern and pilots.CODE is CODE
    assert GROUP_KEY in customer_groups.PreviewGroupIn().fields["key"].validators
    # a limit the pages did not check before: a name longer than the API takes
    r = client.post("/programmes/new", data={"csrf_token": manager, **SEED, "name": "x" * 201})
    assert r.status_code == 422 and _summary(r.get_data(as_text=True)) == ["name"]
    group = {"csrf_token": manager, "key": "Kids", "name": "", "position": "1", "r-0-attribute": "a" * 65,
             "r-0-op": "ge", "r-0-value": "1", "r-1-attribute": "children", "r-1-op": "between", "r-1-value": "3"}
    page = client.post("/groups/new", data=group).get_data(as_text=True)
    assert _summary(page) == ["key", "name", "rules[0].attribute", "rules[1].value"]
    assert 'id="r-0-attribute-error"' in page and 'aria-describedby="rules-help r-1-value-error"' in page
    assert 'aria-describedby="key-help key-error"' in page
