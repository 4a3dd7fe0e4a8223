"""Request bodies, rows and helpers that several test modules build their data from."""
from __future__ import annotations

import csv
import io
import os
import re
import shutil
import threading
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta, timezone

from sqlalchemy import func, select

from pilot.db import db
from pilot.models import Transaction
from pilot.simulate import preset, simulate

# one valid parameter set per mechanic
VALID = {
    "control": {},
    "fixed_discount": {"rate": 0.05},
    "personal_card": {"offer": "double points on baby care", "expected_discount_rate": 0.03,
                      "cost_per_member_per_period": 0.4},
    "tiered": {"tiers": [{"name": "silver", "threshold": 0, "discount_rate": 0.02},
                         {"name": "gold", "threshold": 500, "discount_rate": 0.07},
                         {"name": "platinum", "threshold": 1500, "discount_rate": 0.1}]},
    "progressive_discount": {"bands": [{"min_spend": 20, "rate": 0.02}, {"min_spend": 50, "rate": 0.05},
                                       {"min_spend": 100, "rate": 0.08}]},
    "cumulative_bonus": {"points_per_unit": 1, "point_value": 0.01, "expiry_days": 365, "breakage": 0.3},
    "preferred_service": {"terms": "free home delivery", "cost_per_member_per_period": 1.5},
    "gifts_lottery": {"condition": "Spend 50 or more", "min_spend": 50, "prize_value": 200, "win_probability": 0.01},
    "private_access": {"resource": "early access to seasonal sales", "cost_per_member_per_period": 0.2},
    "club_membership": {"fee": 2.0, "benefits": ["monthly tasting", "5% off wine"], "discount_rate": 0.05,
                        "cost_per_member_per_period": 3.0},
}

PROGRAMME = {"key": "loyalty", "name": "Loyalty card", "variants": [
    {"key": "control", "mechanic": "control"},
    {"key": "discount", "name": "5% card", "mechanic": "fixed_discount", "parameters": VALID["fixed_discount"]},
    {"key": "tiers", "name": "Tiers", "mechanic": "tiered", "parameters": VALID["tiered"]},
    {"key": "bonus", "name": "Bonus points", "mechanic": "cumulative_bonus", "parameters": VALID["cumulative_bonus"]},
]}
ALLOCATION = {"control": 0.25, "discount": 0.25, "tiers": 0.25, "bonus": 0.25}


def pilot_body(key="p1", unit="customer", **extra):
    """A two-stage pilot planned to start in a week (a past planned start is refused)."""
    start = date.today() + timedelta(days=7)
    return {"key": key, "name": "Pilot one", "programme": "loyalty", "unit": unit,
            "guardrails": [{"metric": "spend_per_visit", "max_harm": 0.02}],
            "stages": [{"name": "Two regions", "region_codes": ["ra", "rb"], "allocation": ALLOCATION,
                        "planned_start": start.isoformat(), "planned_end": (start + timedelta(days=54)).isoformat()},
                       {"name": "All", "region_codes": ["ra", "rb", "rc"], "allocation": ALLOCATION}], **extra}


def act(client, m, key, action, **body):
    return client.post(f"/api/v1/pilots/{key}/{action}", json=body, headers=m)


def assign(client, headers, customer, **body):
    return client.post("/api/v1/pilots/p1/assignments", json={"customer": customer, **body}, headers=headers)


# the browser of the Playwright tests (skipped, with the reason, where none is found)
CHROMIUM = os.environ.get("PILOT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")

# the simulated retailer's "now"
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def plant(app, name: str, **over) -> str:
    with app.app_context():
        out = simulate(db.session, preset(name, **over), now=NOW)
        db.session.commit()
        return out["pilot"]


def run_analysis(app, key: str, cutoff: datetime | None = NOW):
    """One analysis of the pilot's current stage at `cutoff`, executed and committed; the run (detached)."""
    from pilot import analysis_runs
    from pilot.auth import CLI
    from pilot.rollout import get_pilot
    with app.app_context():
        run = analysis_runs.create_run(db.session, CLI.actor, get_pilot(db.session, key), cutoff=cutoff)
        analysis_runs.execute(db.session, run)
        db.session.commit()
        db.session.refresh(run)
        db.session.expunge(run)
        return run


def csrf(client, path="/login"):
    page = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def login(client, secret):
    client.post("/login", data={"token": secret, "csrf_token": csrf(client)})


BASE = datetime(2026, 10, 5, 9, 30, tzinfo=timezone(timedelta(hours=2)))
HEADER = "event_id,customer,store,occurred_at,type,amount,items,discount_cost,points_issued,points_redeemed,channel"


def row(i: int, **over) -> dict:
    """A valid sale; every tenth is a refund."""
    refund = i % 10 == 9
    r = {"event_id": f"e{i}", "customer": f"cust{i % 97}", "store": "T001" if i % 3 else "T002",
         "occurred_at": (BASE + timedelta(seconds=37 * i)).isoformat(), "type": "refund" if refund else "sale",
         "amount": f"{-(i % 13) - 1.25 if refund else (i % 50) + 0.99:.2f}", "items": -1 if refund else 1 + i % 5,
         "discount_cost": "" if i % 4 == 0 else f"{(i % 7) * 0.1:.2f}", "points_issued": i % 11,
         "points_redeemed": 0, "channel": "store" if i % 2 else "online"}
    r.update(over)
    return r


def as_json(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if v != ""} for r in rows]


def as_csv(rows: list[dict], newline: str = "\n", bom: bool = False) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=newline)
    writer.writerow(HEADER.split(","))
    writer.writerows([r[k] for k in HEADER.split(",")] for r in rows)
    return (("\ufeff" if bom else "") + buffer.getvalue()).encode()


def count(app, model=Transaction) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


@contextmanager
def serving(app):
    """The app on a real threaded HTTP server on a free local port, for a browser: its base URL."""
    from werkzeug.serving import make_server
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


def store_pilot(app) -> str:
    """A store-randomised pilot (matched on pre-period sales) over the same retailer's stores."""
    plant(app, "clear_win", customers=600, stores=12, key="base")
    from pilot.auth import CLI
    from pilot.programmes import get_programme
    from pilot.rollout import create_pilot, transition
    from pilot.simulate import backdate
    with app.app_context():
        s = db.session
        pilot = create_pilot(s, CLI.actor, get_programme(s, "base-programme"), {
            "key": "stores", "name": "Store pilot", "unit": "store", "layer": "stores", "salt": "fixed",
            "primary_metric": "spend_per_customer", "independent_of": ["base"],
            "stages": [{"region_codes": ["north", "south", "east", "west", "central"],
                        "allocation": {"control": 0.5, "bonus": 0.5}}]})
        start = NOW - timedelta(weeks=4)
        pilot.started_at = start
        transition(s, CLI.actor, pilot, "start")
        backdate(s, pilot, start)
        s.commit()
    return "stores"
