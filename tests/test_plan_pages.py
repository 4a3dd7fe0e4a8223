"""The "Plan" step of the pilot form (pilot.pages.plans): the plan of the configuration being edited, not
saved, and applying a proposed store design — to a draft's stage, to a running pilot's next stage, never
to the running stage (a 409 with the reason, also when no stage is left)."""
from __future__ import annotations

import re
from datetime import timedelta

import pytest

from pilot import planner, store_selection
from pilot.auth import CLI
from pilot.db import db, utcnow
from pilot.errors import Conflict
from pilot.models import Enrolment, Pilot
from pilot.programmes import get_programme
from pilot.rollout import create_pilot, get_pilot, transition
from pilot.synthetic import REGIONS
from tests.factories import csrf, login
from tests.test_planner import _retailer

ALL = [c for c, _ in REGIONS]


def _form(token: str, **over) -> dict:
    """The pilot form as a browser posts it: one stage over every region, half and half."""
    form = {"csrf_token": token, "programme": "loyalty", "key": "", "name": "", "unit": "customer",
            "layer": "default", "primary_metric": "conversion", "alpha": "0.05", "power": "0.8", "mde": "3",
            "margin_rate": "30", "s-0-name": "Stage 1", "s-0-region": ALL, "s-0-w-control": "50",
            "s-0-w-bonus": "50", "s-0-gate-min_days": "14"}
    return {**form, **over}


def _eligible(page: str) -> int:
    return int(re.search(r"eligible customers</th><td>([\d,]+) in", page).group(1).replace(",", ""))


def test_the_form_plans_the_configuration_being_edited_without_saving_it(app, client, tokens):
    _retailer(app, stores=8, customers=600, weeks=20, seed=4, end=utcnow())
    login(client, tokens["manager"])
    form_page = client.get("/pilots/new?programme=loyalty").get_data(as_text=True)
    assert 'formaction="/pilots/form-plan"' in form_page and "Plan this pilot" in form_page
    token = csrf(client, "/pilots/new?programme=loyalty")
    r = client.post("/pilots/form-plan", data=_form(token))
    page = r.get_data(as_text=True)
    assert r.status_code == 200, page
    assert "two-proportion z-test" in page and "<code>conversion</code>" in page and "nothing was saved" in page
    with app.app_context():
        expected = planner.plan_config(db.session, {
            "programme": "loyalty", "unit": "customer", "primary_metric": "conversion", "alpha": 0.05, "power": 0.8,
            "mde": 0.03, "stages": [{"region_codes": ALL, "allocation": {"control": 0.5, "bonus": 0.5}}],
            "simulations": 0, "history_weeks": 8, "seed": 0})
        assert db.session.query(Pilot).count() == 0  # planned, not saved
    assert _eligible(page) == expected["eligible"]["customers"] > 0
    assert f"{expected['analytic']['mde_rel'] * 100:.1f}%" in page
    # a form that cannot be read is a 422 naming the problem, no plan
    r = client.post("/pilots/form-plan", data=_form(token, **{"s-0-w-bonus": "40"}))
    assert r.status_code == 422 and "cannot be planned yet" in r.get_data(as_text=True)
    assert "Figures" not in r.get_data(as_text=True)
    # a saved draft's form: the plan of what is on screen (one region, visits), the draft as it was
    with app.app_context():
        create_pilot(db.session, CLI.actor, get_programme(db.session, "loyalty"), {
            "key": "draft", "name": "Draft", "unit": "customer", "primary_metric": "spend_per_customer",
            "stages": [{"name": "S1", "region_codes": ALL, "allocation": {"control": 0.5, "bonus": 0.5}}]})
        db.session.commit()
    edit = client.get("/pilots/draft/edit").get_data(as_text=True)
    assert 'formaction="/pilots/form-plan"' in edit
    r = client.post("/pilots/form-plan", data=_form(token, editing="draft", key="draft", name="Draft",
                                                     primary_metric="visits_per_customer", **{"s-0-region": ALL[:1]}))
    page = r.get_data(as_text=True)
    assert r.status_code == 200, page
    assert "Plan: Draft" in page and "<code>visits_per_customer</code>" in page and "CUPED" in page
    assert _eligible(page) < expected["eligible"]["customers"]
    with app.app_context():
        draft = get_pilot(db.session, "draft")
        assert draft.primary_metric == "spend_per_customer" and draft.stage(1).region_codes == ALL


def _running_store_pilot(app, stages: int) -> None:
    with app.app_context():
        s = db.session
        pilot = create_pilot(s, CLI.actor, get_programme(s, "loyalty"), {
            "key": "stores", "name": "Store pilot", "unit": "store", "primary_metric": "spend_per_customer",
            "stages": [{"name": "Two regions", "region_codes": ALL[:2], "allocation": {"control": 0.5, "bonus": 0.5}},
                       {"name": "All", "region_codes": ALL, "allocation": {"control": 0.5, "bonus": 0.5}}][:stages]})
        transition(s, CLI.actor, pilot, "start")
        s.commit()


def _scopes(app) -> tuple[list, list, list]:
    with app.app_context():
        pilot = get_pilot(db.session, "stores")
        enrolled = sorted(e.store_id for e in db.session.query(Enrolment).filter_by(pilot_id=pilot.id))
        return (pilot.stage(1).store_codes, pilot.stage(1).region_codes, enrolled,
                pilot.stage(2).store_codes if pilot.stage(2) else None)


def test_a_design_applies_to_the_running_pilots_next_stage_never_to_the_running_one(app, client, tokens):
    _retailer(app, stores=14, customers=700, weeks=40, seed=6, end=utcnow())
    _running_store_pilot(app, stages=2)
    login(client, tokens["manager"])
    page = client.get("/pilots/stores/plan?stores=6").get_data(as_text=True)
    assert "Apply to stage 2" in page and "the running stage keeps its stores" in page
    design = re.search(r'name="store_codes" value="([^"]+)"', page).group(1).split(",")
    assert len(design) == 6
    running = _scopes(app)[:3]
    with app.app_context():
        running_start = get_pilot(db.session, "stores").started_at.isoformat()
    token = csrf(client, "/pilots/stores/plan")
    # the running stage: refused, 409, the reason shown, nothing changed
    r = client.post("/pilots/stores/plan/apply", data={"store_codes": ",".join(design), "stage": "1",
                                                       "csrf_token": token})
    assert r.status_code == 409 and "its scope never changes" in r.get_data(as_text=True)
    assert _scopes(app)[:3] == running
    # without a stage named: the next one
    r = client.post("/pilots/stores/plan/apply", data={"store_codes": ",".join(design), "csrf_token": token})
    assert r.status_code == 302 and r.headers["Location"].endswith("/pilots/stores/plan?stage=2")
    first, regions, enrolled, second = _scopes(app)
    assert (first, regions, enrolled) == running and second == design
    with app.app_context():
        assert store_selection.design_stage(get_pilot(db.session, "stores")).position == 2
        # the plan of the stage to come: its new stores, from the history before now, not before the pilot's start
        plan = planner.plan_pilot(db.session, get_pilot(db.session, "stores"), {"stage": 2, "simulations": 0})
    assert plan["stage"] == 2 and plan["store_level"]["stores"] == 6 and plan["start"] > running_start


def test_a_running_pilot_without_a_next_stage_refuses_a_design_with_a_409(app, client, tokens):
    _retailer(app, stores=10, customers=300, weeks=30, seed=2, end=utcnow() - timedelta(hours=1))
    _running_store_pilot(app, stages=1)
    with app.app_context():
        with pytest.raises(Conflict) as refused:
            store_selection.apply_design(db.session, CLI.actor, get_pilot(db.session, "stores"), ["S001"])
        db.session.rollback()
    assert refused.value.code == "no_next_stage" and "Add a stage first" in refused.value.message
    login(client, tokens["manager"])
    page = client.get("/pilots/stores/plan").get_data(as_text=True)
    assert "no later stage" in page and "Apply to stage" not in page
    before = _scopes(app)
    r = client.post("/pilots/stores/plan/apply", data={"store_codes": "S001,S002,S003,S004",
                                                       "csrf_token": csrf(client, "/pilots/stores/plan")})
    assert r.status_code == 409 and "Add a stage first" in r.get_data(as_text=True)
    assert _scopes(app) == before
