"""A retailer to test against: the synthetic retailer (pilot.synthetic), a pre-period and a pilot
period whose true effects are planted per variant × customer group.

The model, per customer: a weekly visit rate (gamma around the group's rate) and an average basket
(log-normal around the group's basket, times the home store's effect); each week's visits are
Poisson with a yearly season, each visit falls on a weekday by a weekly pattern, and each basket is
log-normal around the customer's average. A treated customer's visit rate and basket move by the
planted effects of their variant and group, optionally with a novelty boost that fades week by
week. Transactions go in through the ingestion path (pilot.ingestion), like any feed.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from pilot.assignment import Holdout, assign_bulk
from pilot.auth import CLI
from pilot.customer_groups import group_case, saved_groups
from pilot.db import utcnow
from pilot.ingestion import Ingest
from pilot.models import Assignment, Customer, Enrolment, Pilot, Region, Store
from pilot.programmes import create_programme
from pilot.rollout import create_pilot, transition
from pilot.synthetic import REGIONS, create_retailer

GROUP_PROFILE = {  # weekly visits, average basket
    "young_parents": (1.4, 42.0), "families": (1.2, 48.0), "seniors": (0.9, 26.0), "singles": (0.8, 22.0),
    "other": (1.0, 30.0)}
WEEKDAY = (0.11, 0.12, 0.12, 0.13, 0.16, 0.22, 0.14)


@dataclass
class Scenario:
    """What to plant. effects: variant -> group (or '*') -> {"visits": rel, "basket": rel}."""

    key: str = "sim"
    customers: int = 4000
    stores: int = 30
    seed: int = 11
    pre_weeks: int = 8
    post_weeks: int = 6
    variants: list[dict[str, Any]] = field(default_factory=lambda: [
        {"key": "control", "name": "No programme", "mechanic": "control"},
        {"key": "bonus", "name": "Bonus points", "mechanic": "cumulative_bonus",
         "parameters": {"points_per_unit": 1, "point_value": 0.02, "expiry_days": 365, "breakage": 0.25}}])
    allocation: dict[str, float] = field(default_factory=lambda: {"control": 0.5, "bonus": 0.5})
    effects: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    novelty: float = 0.0
    srm_drop: float = 0.0
    primary_metric: str = "spend_per_customer"
    guardrails: list[dict[str, Any]] = field(default_factory=lambda: [{"metric": "spend_per_visit", "max_harm": 0.03}])
    mde: float = 0.03
    margin_rate: float = 0.28
    gate: dict[str, Any] = field(default_factory=lambda: {"min_days": 28, "min_units_per_arm": 500})
    next_stage: bool = True


def _ensure_retailer(session: Session, rng: random.Random, scenario: Scenario) -> None:
    """Regions, stores, customers and groups, unless the database has them already."""
    if not session.scalar(select(Region.id).where(Region.code == REGIONS[0][0])):
        create_retailer(session, rng, scenario.stores, scenario.customers)


def simulate(session: Session, scenario: Scenario, now: datetime | None = None) -> dict[str, Any]:
    """Build the retailer, start the pilot `post_weeks` before `now`, assign everyone, ingest the history."""
    rng = random.Random(scenario.seed)
    now = now or utcnow()
    _ensure_retailer(session, rng, scenario)
    programme = create_programme(session, CLI.actor, {"key": f"{scenario.key}-programme",
                                                      "name": f"Simulated programme {scenario.key}",
                                                      "variants": [dict(v) for v in scenario.variants]})
    regions = [c for c, _ in REGIONS]
    stages = [{"name": "Stage 1", "region_codes": regions, "allocation": scenario.allocation, "gate": scenario.gate}]
    if scenario.next_stage:
        stages.append({"name": "Stage 2", "region_codes": regions, "allocation": scenario.allocation})
    pilot = create_pilot(session, CLI.actor, programme, {
        "key": scenario.key, "name": f"Simulated pilot {scenario.key}", "unit": "customer",
        "primary_metric": scenario.primary_metric, "guardrails": scenario.guardrails, "mde": scenario.mde,
        "margin_rate": scenario.margin_rate, "layer": scenario.key, "stages": stages,
        "salt": f"sim-{scenario.seed}-{scenario.key}"})  # a fixed salt: the same seed gives the same pilot
    transition(session, CLI.actor, pilot, "start")
    assign_bulk(session, pilot, Holdout())
    start = now - timedelta(weeks=scenario.post_weeks)
    backdate(session, pilot, start)
    if scenario.srm_drop:
        control = next(v["key"] for v in scenario.variants if v["mechanic"] == "control")
        ids = list(session.scalars(select(Assignment.customer_id).where(
            Assignment.pilot_id == pilot.id, Assignment.variant == control).order_by(Assignment.customer_id)))
        dropped = ids[: int(len(ids) * scenario.srm_drop)]
        session.execute(delete(Assignment).where(Assignment.pilot_id == pilot.id, Assignment.customer_id.in_(dropped)))
    session.flush()
    accepted = history(session, pilot.id, scenario, rng, start, now)
    return {"pilot": pilot.key, "transactions": accepted, "assigned": session.scalar(
        select(func.count()).select_from(Assignment).where(Assignment.pilot_id == pilot.id))}


def backdate(session: Session, pilot: Pilot, start: datetime) -> None:
    """Move a just-started pilot's start (stage, enrolments, assignments) back to `start`."""
    pilot.started_at = pilot.stages[0].started_at = start
    session.execute(update(Enrolment).where(Enrolment.pilot_id == pilot.id).values(enrolled_at=start))
    session.execute(update(Assignment).where(Assignment.pilot_id == pilot.id).values(assigned_at=start))
    session.flush()


def history(session: Session, pilot_id: int, scenario: Scenario, rng: random.Random, start: datetime,
            now: datetime) -> int:
    """Generate every customer's transactions and ingest them; returns the rows accepted."""
    ingest = Ingest(session, CLI.actor, "cli", source=f"sim-{scenario.key}")
    ingest.add_all(_transactions(session, pilot_id, scenario, rng, start, now))
    return ingest.finish().accepted


def _transactions(session: Session, pilot_id: int, scenario: Scenario, rng: random.Random, start: datetime,
                  now: datetime):
    group = group_case(saved_groups(session)).label("grp")
    customers = session.execute(
        select(Customer.external_id, Store.code, group, Assignment.variant)
        .join(Store, Store.id == Customer.home_store_id)
        .outerjoin(Assignment, (Assignment.customer_id == Customer.id) & (Assignment.pilot_id == pilot_id))
        .order_by(Customer.id)).all()
    store_effect: dict[str, float] = {}
    number = 0
    first = start - timedelta(weeks=scenario.pre_weeks)
    for external_id, store, grp, variant in customers:
        visits_rate, basket = GROUP_PROFILE.get(grp, GROUP_PROFILE["other"])
        s_eff = store_effect.setdefault(store, math.exp(rng.gauss(0, 0.15)))
        rate = rng.gammavariate(2.0, visits_rate / 2.0)
        mean_basket = basket * s_eff * math.exp(rng.gauss(0, 0.3))
        planted = scenario.effects.get(variant or "", {})
        effect = planted.get(grp, planted.get("*", {}))
        weeks = scenario.pre_weeks + scenario.post_weeks
        for w in range(weeks):
            week_start = first + timedelta(weeks=w)
            post = week_start >= start
            week_no = w - scenario.pre_weeks
            season = 1 + 0.1 * math.sin(2 * math.pi * (week_start.timetuple().tm_yday / 365.25))
            lift_v = lift_b = 0.0
            if post and effect:
                fade = 1 + scenario.novelty * 0.5 ** week_no if scenario.novelty else 1.0
                lift_v, lift_b = effect.get("visits", 0.0) * fade, effect.get("basket", 0.0) * fade
            for _ in range(_poisson(rng, rate * season * (1 + lift_v))):
                day = rng.choices(range(7), weights=WEEKDAY)[0]
                when = week_start + timedelta(days=day, seconds=rng.randint(8 * 3600, 21 * 3600))
                amount = round(mean_basket * math.exp(rng.gauss(-0.125, 0.5)) * (1 + lift_b), 2)
                if when >= now:
                    continue
                number += 1
                yield number, {"event_id": f"{scenario.key}-{number}", "customer": external_id, "store": store,
                               "occurred_at": when.isoformat(), "amount": f"{amount:.2f}",
                               "items": str(1 + _poisson(rng, amount / 9)), "channel": "store"}


def _poisson(rng: random.Random, lam: float) -> int:
    """Knuth's method (rates here are small)."""
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


TIERS = {"key": "tiers", "name": "Silver/gold/platinum", "mechanic": "tiered", "parameters": {"tiers": [
    {"name": "silver", "threshold": 0, "discount_rate": 0.01},
    {"name": "gold", "threshold": 400, "discount_rate": 0.02},
    {"name": "platinum", "threshold": 1200, "discount_rate": 0.03}], "period_days": 90}}
DISCOUNT10 = {"key": "discount10", "name": "10% card", "mechanic": "fixed_discount", "parameters": {"rate": 0.10}}
CONTROL = {"key": "control", "name": "No programme", "mechanic": "control"}
BONUS = {"key": "bonus", "name": "Bonus points", "mechanic": "cumulative_bonus",
         "parameters": {"points_per_unit": 1, "point_value": 0.02, "expiry_days": 365, "breakage": 0.25}}


def preset(name: str, **over: Any) -> Scenario:
    """The planted truths the tests (and `pilot simulate --scenario`) use."""
    presets = {
        "clear_win": dict(effects={"bonus": {"*": {"visits": 0.10}}}),
        "tiered_groups": dict(variants=[CONTROL, TIERS], allocation={"control": 0.5, "tiers": 0.5}, customers=6000,
                              effects={"tiers": {"young_parents": {"visits": 0.22}}}),
        "discount_loses_money": dict(variants=[CONTROL, DISCOUNT10], allocation={"control": 0.5, "discount10": 0.5},
                                     effects={"discount10": {"*": {"visits": 0.07}}}),
        "harmed_guardrail": dict(effects={"bonus": {"*": {"visits": 0.08, "basket": -0.10}}}),
        "srm": dict(effects={"bonus": {"*": {"visits": 0.10}}}, srm_drop=0.2),
        "too_few": dict(customers=150, stores=10, effects={"bonus": {"*": {"visits": 0.05}}}),
        "novelty": dict(effects={"bonus": {"*": {"visits": 0.02}}}, novelty=6.0),
    }
    if name not in presets:
        raise KeyError(f"unknown scenario {name!r}; one of {', '.join(presets)}")
    return Scenario(**{"key": name.replace("_", "-"), **presets[name], **over})


SCENARIOS = ("clear_win", "tiered_groups", "discount_loses_money", "harmed_guardrail", "srm", "too_few", "novelty")
