"""Historical pilots (pilot.pilot_import): imported and analysed as the same pilot run live, and
validated all or nothing with every bad row named."""
from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

from sqlalchemy import func, select

from pilot.cli import cli
from pilot.db import db
from pilot.models import Assignment, Customer, Pilot, Store
from pilot.rollout import get_pilot
from tests.factories import NOW, login, plant


def history_of(app, key: str) -> dict:
    """The live pilot as a document to import: its settings, its stage as it ran, its assignments."""
    with app.app_context():
        pilot = get_pilot(db.session, key)
        stage = pilot.stage(1)
        rows = db.session.execute(
            select(Customer.external_id, Assignment.variant, Assignment.assigned_at, Store.code)
            .join(Customer, Customer.id == Assignment.customer_id).outerjoin(Store, Store.id == Assignment.store_id)
            .where(Assignment.pilot_id == pilot.id).order_by(Customer.external_id)).all()
        return {"key": "imported", "name": "The same pilot, imported", "programme": pilot.programme.key,
                "primary_metric": pilot.primary_metric, "guardrails": pilot.guardrails, "alpha": pilot.alpha,
                "power": pilot.power, "mde": pilot.mde, "margin_rate": pilot.margin_rate, "layer": "history",
                "salt": pilot.salt,
                "stages": [{"name": stage.name, "region_codes": stage.region_codes, "allocation": stage.allocation,
                            "gate": stage.gate, "started_at": stage.started_at.isoformat(),
                            "ended_at": NOW.isoformat()}],
                "assignments": [{"customer": c, "variant": v, "stage": 1, "exposed_at": at.isoformat(), "store": s}
                                for c, v, at, s in rows]}


def as_csv(rows: list[dict]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["customer", "variant", "stage", "exposed_at", "store"])
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def test_an_imported_pilot_analyses_as_the_same_pilot_run_live(app, client, auth, tokens):
    live = plant(app, "clear_win", customers=1200, stores=12, key="live", next_stage=False)
    doc = history_of(app, live)
    m = auth("manager")
    rows = doc.pop("assignments")
    r = client.post("/api/v1/pilots/import", headers=m, content_type="multipart/form-data",
                    data={"pilot": json.dumps(doc), "assignments": (io.BytesIO(as_csv(rows)), "assignments.csv")})
    assert r.status_code == 201, r.json
    imported = r.json
    assert (imported["state"], imported["current_stage"], imported["salt"]) == ("completed", 1, doc["salt"])
    assert imported["imported_at"] and imported["stages"][0]["started_at"] == doc["stages"][0]["started_at"]
    timeline = client.get("/api/v1/pilots/imported/timeline", headers=m).json["items"]
    assert [e["action"] for e in timeline] == ["create", "import"]
    assert timeline[1]["after"]["imported"] is True and timeline[1]["after"]["assignments"] == len(rows)
    assert client.get("/api/v1/pilots/imported/enrolments", headers=m).json["items"][0]["reason"] == "imported"

    runs = [client.post(f"/api/v1/pilots/{k}/analyses", json={"cutoff": NOW.isoformat()}, headers=m).json
            for k in (live, "imported")]
    assert all(run["status"] == "done" for run in runs)
    first, second = (run["results"] for run in runs)
    assert first["metrics"] and first == second
    assert runs[0]["recommendation"] == runs[1]["recommendation"]
    assert runs[0]["counts"] == runs[1]["counts"] == {v: sum(1 for a in rows if a["variant"] == v)
                                                      for v in ("control", "bonus")}
    browser = app.test_client()
    login(browser, tokens["analyst"])
    assert "An imported pilot" in browser.get(f"/analyses/{runs[1]['id']}").get_data(as_text=True)
    assert "An imported pilot" not in browser.get(f"/analyses/{runs[0]['id']}").get_data(as_text=True)
    # without a cut-off an imported pilot is read up to its stage's end
    default = client.post("/api/v1/pilots/imported/analyses", json={}, headers=m).json
    assert default["cutoff"].startswith(NOW.isoformat()[:19]) and default["results"]["metrics"] == first["metrics"]


def test_a_bad_import_names_every_bad_row_and_stores_nothing(app, client, auth, world, tmp_path):
    m = auth("manager")
    customers = [{"external_id": f"k{i}", "home_store": "ra1"} for i in range(4)]
    assert client.post("/api/v1/customers", json={"customers": customers}, headers=auth("feed")).status_code == 200
    start, end = NOW - timedelta(days=40), NOW - timedelta(days=10)
    good = {"customer": "k0", "variant": "discount", "stage": 1, "exposed_at": (start + timedelta(days=1)).isoformat()}
    doc = {"key": "old", "name": "Last year's card", "programme": "loyalty",
           "stages": [{"region_codes": ["ra"], "allocation": {"control": 0.5, "discount": 0.5},
                       "started_at": start.isoformat(), "ended_at": end.isoformat()}],
           "enrolments": [{"store": "ra1", "stage": 1}, {"store": "nope", "stage": 1}],
           "assignments": [good, {**good, "customer": "ghost"}, {**good, "customer": "k1", "variant": "tiers"},
                           {**good, "customer": "k2", "exposed_at": (end + timedelta(days=1)).isoformat()},
                           {**good, "customer": "k3", "stage": 2}, {**good, "exposed_at": "2026-01-01"}, good,
                           {**good, "customer": "k1", "colour": "red"}]}
    r = client.post("/api/v1/pilots/import", json=doc, headers=m)
    assert r.status_code == 422, r.json
    assert [(e["row"], e["field"]) for e in r.json["error"]["details"]["rows"]] == [
        (2, "enrolments.store"), (2, "customer"), (3, "variant"), (4, "exposed_at"), (5, "stage"), (6, "exposed_at"),
        (7, "customer"), (8, "colour")]
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Pilot)) == 0
        assert db.session.scalar(select(func.count()).select_from(Assignment)) == 0
    future = {**doc, "stages": [{**doc["stages"][0], "ended_at": (NOW + timedelta(days=400)).isoformat()}]}
    r = client.post("/api/v1/pilots/import", json=future, headers=m)
    assert r.status_code == 422 and list(r.json["error"]["details"]["fields"]) == ["stages.1"]
    assert client.post("/api/v1/pilots/import", json={**doc, "unit": "shelf"}, headers=m).json["error"][
        "details"]["fields"] == {"unit": ["Must be one of: customer, store."]}
    assert client.post("/api/v1/pilots/import", json=doc, headers=auth("analyst")).status_code == 403
    # the same document, put right, through the command line
    doc["enrolments"] = doc["enrolments"][:1]
    doc["assignments"] = [good, {**good, "customer": "k1"}]
    path = str(tmp_path / "old.json")
    with open(path, "w") as f:
        json.dump(doc, f)
    out = app.test_cli_runner().invoke(cli, ["import-pilot", path])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["assignments"] == 2
    again = app.test_cli_runner().invoke(cli, ["import-pilot", path])
    assert again.exit_code == 1 and "exists already" in again.output
