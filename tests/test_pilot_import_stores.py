"""Historical store pilots (pilot.pilot_import, pilot.import_rows): imported with the arm each store
ran in and analysed as the same pilot run live — the store decision checked against statsmodels on the
raw rows — and validated all or nothing, every bad row named, an import sent twice refused."""
from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import numpy as np
import pytest
import statsmodels.formula.api as smf
from scipy import stats
from sqlalchemy import func, select
from statsmodels.stats.weightstats import ttest_ind

from pilot import analysis_runs
from pilot.auth import CLI
from pilot.cli import cli
from pilot.db import db
from pilot.errors import Conflict
from pilot.models import Assignment, Enrolment, Pilot, Programme
from pilot.rollout import active_enrolments, get_pilot, transition
from tests.factories import NOW, login
from tests.stats_helpers import cr2_reference
from tests.test_store_decision import (
    DAYS_POST,
    DAYS_PRE,
    raw_store_values,
    start_at,
    start_store_pilot,
    store_history,
    store_world,
)

DECISION = "ancova_cr2+randomisation"


def as_csv(rows: list[dict], fields: list[str]) -> io.BytesIO:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return io.BytesIO(out.getvalue().encode())


def live_store_pilot(app, monkeypatch) -> tuple[dict, list[dict]]:
    """A live store pilot (16 stores matched in pairs, visits +12% in the bonus stores) and its history
    as a document to import: its settings, its stage as it ran to NOW, the arm of each store."""
    with app.app_context():
        session = db.session
        stores = store_world(session)
        pilot = start_store_pilot(session)
        start = NOW - timedelta(days=DAYS_POST)
        store_history(session, stores, start, {}, seed=5, days=range(-DAYS_PRE, 0))
        start_at(session, pilot, start, monkeypatch)
        arms = {e.store.code: e.arm for e in active_enrolments(session, pilot)}
        store_history(session, stores, start, arms, visits_lift=0.12, seed=5, days=range(0, DAYS_POST))
        session.commit()
        stage = pilot.stages[0]
        doc = {"key": "history", "name": "The same store pilot, imported", "programme": "prog", "unit": "store",
               "primary_metric": pilot.primary_metric, "guardrails": pilot.guardrails, "alpha": pilot.alpha,
               "mde": pilot.mde, "layer": "history", "salt": pilot.salt,
               "stages": [{"name": stage.name, "region_codes": stage.region_codes, "allocation": stage.allocation,
                           "gate": stage.gate, "started_at": start.isoformat(), "ended_at": NOW.isoformat()}]}
        return doc, [{"store": code, "stage": 1, "arm": arm} for code, arm in sorted(arms.items())]


def test_an_imported_store_pilot_analyses_as_the_same_pilot_run_live_checked_against_statsmodels(
        app, client, auth, tokens, monkeypatch):
    doc, enrolments = live_store_pilot(app, monkeypatch)
    m = auth("manager")
    r = client.post("/api/v1/pilots/import", headers=m, content_type="multipart/form-data", data={
        "pilot": json.dumps(doc), "enrolments": (as_csv(enrolments, ["store", "stage", "arm"]), "enrolments.csv")})
    assert r.status_code == 201, r.json
    assert (r.json["unit"], r.json["state"], r.json["current_stage"]) == ("store", "completed", 1)
    assert r.json["imported_at"] and r.json["ended_at"].startswith(NOW.isoformat()[:19])
    listed = client.get("/api/v1/pilots/history/enrolments?limit=100", headers=m).json["items"]
    assert sorted((e["store"], e["arm"]) for e in listed) == [(e["store"], e["arm"]) for e in enrolments]
    assert {(e["reason"], e["withdrawn_at"]) for e in listed} == {("imported", None)}
    timeline = client.get("/api/v1/pilots/history/timeline", headers=m).json["items"]
    assert [e["action"] for e in timeline] == ["create", "import"]
    per_arm = {arm: sum(1 for e in enrolments if e["arm"] == arm) for arm in ("bonus", "control")}
    assert timeline[1]["after"]["stores_per_arm"] == per_arm and timeline[1]["after"]["enrolments"] == 16

    runs = [client.post(f"/api/v1/pilots/{k}/analyses", json={"cutoff": NOW.isoformat()}, headers=m).json
            for k in ("sp", "history")]
    assert [run["status"] for run in runs] == ["done", "done"]
    live, imported = (run["results"] for run in runs)
    assert imported["unit"] == "store" and imported["metrics"] and live == imported
    assert runs[0]["recommendation"] == runs[1]["recommendation"]
    assert runs[1]["counts"] == per_arm and [v["arm"] for v in imported["verdicts"]] == ["bonus"]
    browser = app.test_client()
    login(browser, tokens["analyst"])
    assert "An imported pilot" in browser.get(f"/analyses/{runs[1]['id']}").get_data(as_text=True)
    assert "An imported pilot" not in browser.get(f"/analyses/{runs[0]['id']}").get_data(as_text=True)
    # without a cut-off an imported pilot is read up to its stage's end: the same numbers
    default = client.post("/api/v1/pilots/history/analyses", json={}, headers=m).json
    assert default["results"]["metrics"] == imported["metrics"]

    with app.app_context():
        s, _ = raw_store_values(db.session, get_pilot(db.session, "history"), NOW - timedelta(days=DAYS_POST), NOW)
    s["treated"] = (s.arm == "bonus").astype(float)
    rows = {(r["metric"], r["method"]): r for r in imported["metrics"]}
    # the decision row: ANCOVA with CR2 errors (one store a cluster: HC2) and Bell–McCaffrey df
    ols = smf.ols("y ~ treated + x", data=s).fit()
    hc2 = smf.ols("y ~ treated + x", data=s).fit(cov_type="HC2")
    primary = rows[("spend_per_customer", DECISION)]
    x = np.column_stack([np.ones(len(s)), s.treated, s.x])
    _, se, df_bm = cr2_reference(x, s.y.to_numpy(), list(range(len(s))), [0, 1, 0])
    assert primary["effect_abs"] == pytest.approx(ols.params["treated"], rel=1e-7)
    assert se == pytest.approx(hc2.bse["treated"], rel=1e-9) and primary["df_bm"] == pytest.approx(df_bm, rel=1e-7)
    half = (primary["ci_cr2"][1] - primary["ci_cr2"][0]) / 2
    assert half == pytest.approx(hc2.bse["treated"] * stats.t.ppf(1 - doc["alpha"] / 2, df_bm), rel=1e-7)
    t_cr2 = ols.params["treated"] / hc2.bse["treated"]
    assert primary["p_cr2"] == pytest.approx(2 * stats.t.sf(abs(t_cr2), df_bm), rel=1e-7)
    assert primary["randomisation"]["assignments"] == 2 ** 8  # eight matched pairs
    # the diagnostics: difference-in-differences (Welch on the changes) and classical ANCOVA
    change = s.y - s.x
    _, p_did, _ = ttest_ind(change[s.treated == 1], change[s.treated == 0], usevar="unequal")
    did = rows[("spend_per_customer", "difference_in_differences")]
    assert did["effect_abs"] == pytest.approx(change[s.treated == 1].mean() - change[s.treated == 0].mean(), rel=1e-7)
    assert did["p_value"] == pytest.approx(p_did, rel=1e-6)
    assert rows[("spend_per_customer", "ancova")]["p_value"] == pytest.approx(ols.pvalues["treated"], rel=1e-6)
    # the guardrail, spend per visit (a store's ratio), by the same ANCOVA
    ratio = s.assign(y=s.y / s.y_visits, x=s.x / s.x_visits)
    guard = rows[("spend_per_visit", DECISION)]
    assert guard["role"] == "guardrail"
    assert guard["effect_abs"] == pytest.approx(smf.ols("y ~ treated + x", data=ratio).fit().params["treated"],
                                                rel=1e-7)
    assert imported["srm"]["observed"] == [per_arm[a] for a in imported["srm"]["variants"]]


def test_an_imported_store_pilot_keeps_its_stores_to_the_end_unless_withdrawn_before(app, client, auth, monkeypatch):
    """The import keeps a store that stayed to the end enrolled (withdrawn_at null), so its analysis at
    the stage's end counts every store; a store withdrawn before the end is left out, as live."""
    doc, enrolments = live_store_pilot(app, monkeypatch)
    m = auth("manager")
    early = (NOW - timedelta(days=3)).isoformat()
    given = [{**e, "withdrawn_at": NOW.isoformat()} for e in enrolments]  # at the end: the same as staying
    given[0]["withdrawn_at"] = early
    r = client.post("/api/v1/pilots/import", json={**doc, "enrolments": given}, headers=m)
    assert r.status_code == 201, r.json
    run = client.post("/api/v1/pilots/history/analyses", json={}, headers=m).json
    assert sum(run["counts"].values()) == 15  # the store withdrawn three days before the end is left out
    with app.app_context():
        withdrawn = db.session.scalars(select(Enrolment.withdrawn_at).join(Pilot).where(Pilot.key == "history"))
        assert sorted(w.isoformat()[:19] for w in withdrawn if w) == [early[:19]]


def store_doc(start, end) -> dict:
    return {"key": "old", "name": "Last year's store card", "programme": "prog", "unit": "store",
            "stages": [{"region_codes": ["z0"], "allocation": {"control": 0.5, "bonus": 0.5},
                        "started_at": start.isoformat(), "ended_at": end.isoformat()}]}


def test_a_bad_store_import_names_every_bad_row_stores_nothing_and_is_not_repeated(app, client, auth, tmp_path):
    with app.app_context():
        store_world(db.session)
        db.session.commit()
    m = auth("manager")
    customers = [{"external_id": f"k{i}", "home_store": code} for i, code in enumerate(["z0s0", "z0s1", "z0s7"])]
    assert client.post("/api/v1/customers", json={"customers": customers}, headers=auth("feed")).status_code == 200
    start, end = NOW - timedelta(days=40), NOW - timedelta(days=10)
    doc = store_doc(start, end)
    inside = (start + timedelta(days=1)).isoformat()
    enrolments = [{"store": "z0s0", "stage": 1, "arm": "control"}, {"store": "z0s1", "stage": 1, "arm": "bonus"},
                  {"store": "nope", "stage": 1, "arm": "bonus"}, {"store": "z0s2", "stage": 1},
                  {"store": "z0s3", "stage": 1, "arm": "tiers"}, {"store": "z0s0", "stage": 1, "arm": "bonus"},
                  {"store": "z0s4", "stage": 2, "arm": "bonus"},
                  {"store": "z0s5", "stage": 1, "arm": "bonus", "enrolled_at": end.isoformat()},
                  {"store": "z0s6", "stage": 1, "arm": "bonus", "withdrawn_at": "2026-01-01"},
                  {"store": "z1s0", "stage": 1, "arm": "bonus"}]
    assignments = [{"customer": "k0", "variant": "control", "stage": 1, "exposed_at": inside},
                   {"customer": "k1", "variant": "control", "stage": 1, "exposed_at": inside},
                   {"customer": "k2", "variant": "bonus", "stage": 1, "exposed_at": inside}]
    r = client.post("/api/v1/pilots/import", json={**doc, "enrolments": enrolments, "assignments": assignments},
                    headers=m)
    assert r.status_code == 422, r.json
    error = r.json["error"]
    assert error["code"] == "validation_error" and error["details"]["enrolments"] == 10
    assert [(e["row"], e["field"]) for e in error["details"]["rows"]] == [
        (3, "enrolments.store"), (4, "enrolments.arm"), (5, "enrolments.arm"), (6, "enrolments.store"),
        (7, "enrolments.stage"), (8, "enrolments.enrolled_at"), (9, "enrolments.withdrawn_at"),
        (10, "enrolments.store"), (2, "variant"), (3, "store")]
    messages = [e["message"] for e in error["details"]["rows"]]
    assert "enrolled already in row 1" in messages[3] and "not in stage 1's scope" in messages[7]
    assert "arm of store 'z0s1' (bonus)" in messages[8] and "not enrolled" in messages[9]
    with app.app_context():
        assert [db.session.scalar(select(func.count()).select_from(t)) for t in (Pilot, Enrolment, Assignment)] == [
            0, 0, 0]
    # a store pilot without its stores' arms, or with no store in an arm, is refused by field
    missing = client.post("/api/v1/pilots/import", json=doc, headers=m).json["error"]
    assert list(missing["details"]["fields"]) == ["enrolments"]
    one_arm = client.post("/api/v1/pilots/import", json={**doc, "enrolments": enrolments[:1]}, headers=m).json
    assert one_arm["error"]["details"]["fields"] == {"stages.1": ["No store enrolled in arm(s) bonus."]}
    assert client.post("/api/v1/pilots/import", json={**doc, "programme": {
        "key": "newprog", "name": "New", "variants": [{"key": "control", "mechanic": "control"}]},
        "enrolments": enrolments[:1]}, headers=m).status_code == 422
    with app.app_context():  # (the new programme of a refused import is not kept either)
        assert db.session.scalar(select(func.count()).select_from(Programme).where(Programme.key == "newprog")) == 0

    # put right, through the command line with the enrolments as a CSV; sent again, refused with a 409
    path, rows = tmp_path / "old.json", tmp_path / "enrolments.csv"
    path.write_text(json.dumps(doc))
    rows.write_bytes(as_csv(enrolments[:2], ["store", "stage", "arm"]).getvalue())
    out = app.test_cli_runner().invoke(cli, ["import-pilot", str(path), "--enrolments", str(rows)])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["stores_per_arm"] == {"bonus": 1, "control": 1}
    again = app.test_cli_runner().invoke(cli, ["import-pilot", str(path), "--enrolments", str(rows)])
    assert again.exit_code == 1 and json.loads(again.output)["code"] == "already_imported"
    replay = client.post("/api/v1/pilots/import", json={**doc, "enrolments": enrolments[:2]}, headers=m)
    assert replay.status_code == 409 and replay.json["error"]["code"] == "already_imported"
    assert "exists already" in replay.json["error"]["message"]
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Enrolment)) == 2
        pilot = get_pilot(db.session, "old")
        assert pilot.imported_at and pilot.state == "completed"
        with pytest.raises(Conflict, match="Cannot start a completed pilot"):
            transition(db.session, CLI.actor, pilot, "start")
        assert analysis_runs.create_run(db.session, CLI.actor, pilot).cutoff == pilot.stages[0].ended_at
