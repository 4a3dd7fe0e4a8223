"""The synthetic retailer of the demo and the simulations: five regions, stores of three formats,
customers with households, and four customer groups. Everything is drawn from the random generator
the caller passes, so the same seed gives the same retailer."""
from __future__ import annotations

import random
from datetime import date, timedelta

from sqlalchemy.orm import Session

from pilot import stores
from pilot.auth import CLI
from pilot.customers import create_group, upsert_customers
from pilot.row_validation import RowErrors

REGIONS = [("north", "North"), ("south", "South"), ("east", "East"), ("west", "West"), ("central", "Central")]
FORMATS = [("hypermarket", 6000, 12000), ("supermarket", 1200, 3500), ("convenience", 150, 600)]
AGE_BANDS = [("18-24", 0.10), ("25-34", 0.20), ("35-44", 0.21), ("45-54", 0.18), ("55-64", 0.15), ("65+", 0.16)]
GROUPS = [
    {"key": "young_parents", "name": "Young parents",
     "rules": [{"attribute": "age_band", "op": "in", "value": ["18-24", "25-34", "35-44"]},
               {"attribute": "children", "op": "ge", "value": 1}]},
    {"key": "families", "name": "Families", "rules": [{"attribute": "children", "op": "ge", "value": 1}]},
    {"key": "seniors", "name": "Seniors", "rules": [{"attribute": "age_band", "op": "eq", "value": "65+"}]},
    {"key": "singles", "name": "Singles", "rules": [{"attribute": "household_size", "op": "eq", "value": 1}]},
]


def create_retailer(session: Session, rng: random.Random, stores: int, customers: int) -> list[str]:
    """Add the regions, `stores` stores, `customers` customers and the groups; returns the store codes."""
    add_regions(session)
    codes = [add_store(session, rng, i) for i in range(stores)]
    upsert_customers(session, CLI.actor, ((i, customer(rng, i, codes)) for i in range(1, customers + 1)), RowErrors())
    add_groups(session)
    return codes


def add_regions(session: Session) -> None:
    """Add the five regions."""
    for code, name in REGIONS:
        stores.create_region(session, CLI.actor, {"code": code, "name": name})


def add_groups(session: Session) -> None:
    """Add the four customer groups, in their order of precedence."""
    for group in GROUPS:
        create_group(session, CLI.actor, dict(group))


def add_store(session: Session, rng: random.Random, i: int) -> str:
    """Add the `i`-th store (regions in turn, a drawn format, size and opening date); returns its code."""
    region = REGIONS[i % len(REGIONS)][0]
    fmt, low, high = rng.choices(FORMATS, weights=[1, 4, 3])[0]
    code = f"S{i + 1:03d}"
    stores.create_store(session, CLI.actor, {
        "code": code, "name": f"{REGIONS[i % len(REGIONS)][1]} {fmt} {i // len(REGIONS) + 1}", "region": region,
        "format": fmt, "size_sqm": float(rng.randint(low, high)),
        "opening_date": date(2005, 1, 1) + timedelta(days=rng.randint(0, 6000)),
        "attributes": {"parking": rng.random() < 0.6, "urban": rng.random() < 0.5}})
    return code


def customer(rng: random.Random, i: int, stores: list[str]) -> dict:
    """The `i`-th customer's row: an age band, a household that fits it, and a home store."""
    age = rng.choices([a for a, _ in AGE_BANDS], weights=[w for _, w in AGE_BANDS])[0]
    young, old = age in ("18-24", "25-34", "35-44"), age in ("55-64", "65+")
    children = 0 if old or rng.random() < (0.45 if young else 0.7) else rng.choice([1, 1, 2, 2, 3])
    adults = 1 if rng.random() < (0.35 if not children else 0.15) else 2
    return {"external_id": f"C{i:06d}", "home_store": rng.choice(stores), "age_band": age,
            "household_size": adults + children, "children": children,
            "attributes": {"channel": rng.choice(["web", "store", "both"]), "newbie": rng.random() < 0.2}}
