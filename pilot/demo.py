"""Realistic demo data: 5 regions, 60 stores, 20,000 customers, four customer groups."""
from __future__ import annotations

import random
import secrets
from datetime import date, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pilot import analysis_runs
from pilot.assignment import Holdout, assign_bulk
from pilot.auth import CLI, issue_token
from pilot.db import utcnow
from pilot.metric_definitions import ensure_shipped
from pilot.models import Pilot, Region, Store
from pilot.programmes import create_programme
from pilot.rollout import create_pilot, transition
from pilot.simulate import Scenario, backdate, history
from pilot.synthetic import REGIONS, create_retailer
from pilot.synthetic_events import events_history

PROGRAMME = {"key": "card2027", "name": "Loyalty card 2027",
             "description": "Which card mechanic to roll out next year.",
             "variants": [
                 {"key": "control", "name": "No card", "mechanic": "control"},
                 {"key": "discount5", "name": "5% card", "mechanic": "fixed_discount", "parameters": {"rate": 0.05}},
                 {"key": "tiers", "name": "Silver/gold/platinum", "mechanic": "tiered", "parameters": {"tiers": [
                     {"name": "silver", "threshold": 0, "discount_rate": 0.02},
                     {"name": "gold", "threshold": 500, "discount_rate": 0.05},
                     {"name": "platinum", "threshold": 1500, "discount_rate": 0.08}], "period_days": 90}},
                 {"key": "bonus", "name": "Bonus points", "mechanic": "cumulative_bonus", "parameters": {
                     "points_per_unit": 1, "point_value": 0.02, "expiry_days": 365, "breakage": 0.25}}]}
ALLOCATION = {"control": 0.25, "discount5": 0.25, "tiers": 0.25, "bonus": 0.25}
PILOT = {"key": "card-pilot", "name": "Card pilot: north and south first", "unit": "customer",
         "primary_metric": "spend_per_customer",
         "guardrails": [{"metric": "spend_per_visit", "max_harm": 0.03},
                        {"metric": "visits_per_customer", "max_harm": 0.02}],
         "alpha": 0.05, "power": 0.8, "mde": 0.03, "margin_rate": 0.28, "layer": "loyalty",
         "stages": [{"name": "North and south", "region_codes": ["north", "south"], "allocation": ALLOCATION,
                     "planned_start": date(2026, 10, 1), "planned_end": date(2026, 11, 30),
                     "gate": {"min_days": 28, "min_units_per_arm": 500}},
                    {"name": "All regions", "region_codes": [c for c, _ in REGIONS], "allocation": ALLOCATION,
                     "planned_start": date(2026, 12, 1), "planned_end": date(2027, 1, 31)}]}


def has_demo(session: Session) -> bool:
    """Whether any data exists already (the demo never overwrites)."""
    return bool(session.scalar(select(func.count()).select_from(Region)))


def load_demo(session: Session, customers: int = 20_000, seed: int = 7, history: bool = True) -> str:
    """Create the demo retailer in the session and return a new admin token's secret."""
    create_retailer(session, random.Random(seed), stores=60, customers=customers)
    ensure_shipped(session)
    programme = create_programme(session, CLI.actor, dict(PROGRAMME))
    today = date.today()
    first, second = (dict(s) for s in PILOT["stages"])
    first.update(planned_start=today - timedelta(weeks=5), planned_end=today + timedelta(days=25))
    second.update(planned_start=today + timedelta(days=26), planned_end=today + timedelta(days=90))
    # A salt from the seed (not a random one): the same seed gives the same assignments, transactions,
    # analysis and recommendation, whenever and wherever the demo is loaded.
    pilot = create_pilot(session, CLI.actor, programme, {**PILOT, "salt": f"demo-{seed}", "stages": [first, second]},
                         past_start=True)  # its history moves the start back to the planned date
    transition(session, CLI.actor, pilot, "start")
    if history:
        _history(session, pilot, seed)
    _, secret = issue_token(session, "demo admin", "admin", None)
    return secret


DEMO_ROLES = ("admin", "manager", "analyst", "store", "feed")


def demo_users(session: Session) -> list[tuple[str, str, str]]:
    """One user per role (the store user works in the first store; the feed is a service user with a token):
    (e-mail, role, password or the feed's token), each secret shown once."""
    from pilot.users import create_user, issue_user_token
    store = session.scalar(select(Store).order_by(Store.code).limit(1))
    out = []
    for role in DEMO_ROLES:
        password = None if role == "feed" else secrets.token_urlsafe(9)
        user = create_user(session, CLI.actor, {"name": f"Demo {role}", "email": f"{role}@demo.example", "role": role,
                                                "store": store.code if role == "store" else None,
                                                "password": password})
        secret = password or issue_user_token(session, CLI.actor, user, "demo feed")[1]
        out.append((user.email, role, secret))
    return out


DEMO_EFFECTS = {"discount5": {"*": {"visits": 0.05}}, "tiers": {"young_parents": {"visits": 0.15}},
                "bonus": {"*": {"visits": 0.07}}}
# the loyalty signals beyond the till (#25): tiers bring more app use and happier customers, bonus points
# more redemptions; the 5% card moves none of them
DEMO_EVENT_EFFECTS = {"tiers": {"app_session": 0.3, "referral": 0.25, "nps": 0.8},
                      "bonus": {"points_redeemed": 0.6, "app_session": 0.1}}


def _history(session: Session, pilot: Pilot, seed: int) -> None:
    """Five weeks of pilot (after eight weeks of pre-period) with planted effects, and an analysis."""
    now = utcnow()
    assign_bulk(session, pilot, Holdout())
    scenario = Scenario(key="demo", seed=seed, pre_weeks=8, post_weeks=5, effects=DEMO_EFFECTS)
    start = now - timedelta(weeks=scenario.post_weeks)
    backdate(session, pilot, start)
    history(session, pilot.id, scenario, random.Random(seed), start, now)
    events_history(session, pilot.id, random.Random(seed + 1), start - timedelta(weeks=scenario.pre_weeks), start,
                   now, DEMO_EVENT_EFFECTS)
    run = analysis_runs.create_run(session, CLI.actor, pilot)
    analysis_runs.execute(session, run)

