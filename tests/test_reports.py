"""Analyst reports over HTTP: exports with a Bearer token, CSV headers, the trust panel, the drill-down
into any metric and the stages side by side (numbers checked against the raw rows or the run)."""
from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import stats
from sqlalchemy import text
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportions_ztest

import reports
from pilot import analysis_runs
from pilot.analysis_config import SRM_ALPHA
from pilot.auth import CLI
from pilot.cli import cli
from pilot.db import db
from pilot.demo import load_demo
from pilot.models import (
    AnalysisRun,
    Assignment,
    Customer,
    CustomerGroup,
    Enrolment,
    Pilot,
    Programme,
    Region,
    Store,
    Transaction,
)
from pilot.rollout import get_pilot
from tests.factories import NOW, login, plant, run_analysis, store_pilot


def analysed(app, customers: int = 900) -> tuple[str, int]:
    key = plant(app, "clear_win", customers=customers, stores=8)
    return key, run_analysis(app, key).id


def page_text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).replace(" ,", ",")


def test_exports_answer_a_bearer_token_under_the_report_roles(app, client, tokens):
    _, run_id = analysed(app)
    bearer = lambda role: {"Authorization": f"Bearer {tokens[role]}"}  # noqa: E731
    paths = [f"/analyses/{run_id}/tables/metrics.csv", f"/analyses/{run_id}/tables/groups.json",
             f"/analyses/{run_id}/report.html"]
    for path in paths:
        assert client.get(path, headers=bearer("analyst")).status_code == 200, path
        assert client.get(path, headers=bearer("store")).status_code == 403, path  # a store reads no pilot's report
        assert client.get(path, headers={"Authorization": "Bearer plt_nope"}).status_code == 401, path
        assert client.get(path).status_code == 302, path  # a browser without a session goes to the login
    standalone = client.get(paths[2], headers=bearer("manager")).get_data(as_text=True)
    markup = re.sub(r"<script>.*?</script>", "", standalone, flags=re.S)  # plotly.js, inlined, names URLs
    assert not re.search(r'<(script|img|iframe)[^>]* src=|<link[^>]* href="(?!data:)', markup)  # nothing fetched
    assert not re.search(r'(src|href)="(https?:)?//', markup)
    assert "Plotly.newPlot" in standalone and "plotly.min.js" not in markup and 'id="trust"' in standalone
    app.config["CHROMIUM"] = "/nowhere/chromium"
    missing = client.get(f"/analyses/{run_id}/report.pdf", headers=bearer("analyst"))
    assert missing.status_code == 503 and "Chromium" in missing.get_data(as_text=True)


def test_every_csv_has_its_header_even_without_rows(app, client, auth):
    _, run_id = analysed(app, customers=600)
    for name in reports.TABLES:
        body = client.get(f"/analyses/{run_id}/tables/{name}.csv", headers=auth("analyst")).get_data(as_text=True)
        header = next(csv.reader(io.StringIO(body)))
        assert header[:len(reports.COLUMNS[name])] == list(reports.COLUMNS[name]), name
    stores = client.get(f"/analyses/{run_id}/tables/stores.csv", headers=auth("analyst")).get_data(as_text=True)
    assert stores == ",".join(reports.COLUMNS["stores"]) + "\n"  # a customer pilot has no store rows


def test_trust_panel_shows_a_passing_srm_freshness_methods_and_looks(app, client, tokens):
    key, first = analysed(app)
    with app.app_context():
        pilot = get_pilot(db.session, key)
        counts = dict(db.session.execute(text("SELECT variant, COUNT(*) FROM assignments WHERE pilot_id = :p "
                                              "GROUP BY variant"), {"p": pilot.id}).all())
        weights = pilot.stages[0].allocation
        second = analysis_runs.create_run(db.session, CLI.actor, pilot, cutoff=NOW)
        analysis_runs.execute(db.session, second)
        db.session.commit()
        # a purchase before the cut-off that arrives after the analysis read the data
        someone = db.session.query(Assignment).filter_by(pilot_id=pilot.id).first()
        db.session.add(Transaction(source="test", event_id="late-1", customer_id=someone.customer_id,
                                   store_id=someone.store_id or 1, occurred_at=NOW - timedelta(hours=2), type="sale",
                                   amount=10.0, batch_id=0, batch_row=0,
                                   received_at=second.started_at + timedelta(minutes=5)))
        db.session.commit()
        second_id, results, tuning = second.id, second.results, second.config["sequential_tuning"]
        version = second.config.get("plan_version")  # the plan the run used, once plans are versioned
    arms = list(weights)
    observed = [counts[a] for a in arms]
    chi2 = stats.chisquare(observed, [sum(observed) * weights[a] for a in arms])
    assert chi2.pvalue > 0.001  # the planted pilot has no mismatch: the check passes
    login(client, tokens["analyst"])
    html = client.get(f"/analyses/{second_id}").get_data(as_text=True)
    trust = page_text(html[html.index('id="trust"'):html.index('id="stages"')])
    assert "Sample-ratio check: passed" in trust and f"p = {chi2.pvalue:.2g}" in trust
    for arm, n in zip(arms, observed):
        assert f"{arm} {n} {sum(observed) * weights[arm]:.0f} {n / sum(observed):.1%} {weights[arm]:.1%}" in trust
    assert "analysed 2 times" in trust and f"tightest near {tuning:,.0f} units" in trust
    assert f"below p {SRM_ALPHA:g} the units did not reach the arms as planned" in trust
    assert "Late-arriving rows: 1 transactions" in trust
    assert f"Analysis plan version: {f'v{version}' if version else 'not versioned'} " in trust
    primary = next(r for r in results["metrics"] if r["role"] == "primary")
    assert f"cuped ({primary['metric']}" in trust and f"variance reduction bonus {primary['variance_reduction']:.1%}" in trust
    assert f"always-valid p = {primary['seq_p_value']:.2g}" in trust
    first_page = page_text(client.get(f"/analyses/{first}").get_data(as_text=True))
    assert "analysed 1 time " in first_page


def group_of(c: pd.DataFrame) -> np.ndarray:
    """The simulated retailer's customer groups, first match wins."""
    young = c.age_band.isin(["18-24", "25-34", "35-44"]) & (c.children >= 1)
    return np.select([young, c.children >= 1, c.age_band == "65+", c.household_size == 1],
                     ["young_parents", "families", "seniors", "singles"], "other")


def test_drill_down_shows_any_metric_by_group_and_week(app, client, tokens):
    key, run_id = analysed(app, customers=1200)
    with app.app_context():
        pilot = get_pilot(db.session, key)
        run = db.session.get(AnalysisRun, run_id)
        results = run.results
        units = pd.read_sql(text(
            "SELECT a.customer_id, a.variant, c.age_band, c.children, c.household_size, "
            "(SELECT COUNT(*) FROM transactions t WHERE t.customer_id = a.customer_id AND t.type = 'sale' "
            " AND t.occurred_at >= :start AND t.occurred_at < :cutoff) AS visits "
            "FROM assignments a JOIN customers c ON c.id = a.customer_id WHERE a.pilot_id = :p"),
            db.session.connection(), params={"p": pilot.id, "start": pilot.started_at, "cutoff": NOW})
    units["grp"] = group_of(units)
    conversion = [r for r in results["metric_groups"] if r["metric"] == "conversion"]
    assert {r["group"] for r in conversion} == set(units.grp)
    for r in conversion:  # each group's two-proportion z-test, on the raw rows
        g = units[units.grp == r["group"]]
        c, t = g[g.variant == "control"], g[g.variant == "bonus"]
        _, p = proportions_ztest([(t.visits > 0).sum(), (c.visits > 0).sum()], [len(t), len(c)])
        assert (r["n_control"], r["n_treatment"]) == (len(c), len(t))
        assert r["p_value"] == pytest.approx(p, rel=1e-6)
    bh = multipletests([r["p_value"] for r in conversion], method="fdr_bh")[1]
    assert [r["p_bh"] for r in conversion] == pytest.approx(list(bh), rel=1e-9)
    login(client, tokens["analyst"])
    html = client.get(f"/analyses/{run_id}?metric=conversion").get_data(as_text=True)
    assert '<option value="conversion" selected>' in html
    groups = page_text(html[html.index('id="groups-table"'):html.index('id="weeks-table"')])
    for r in conversion:
        assert (f"bonus {r['group']} {r['n_control']} / {r['n_treatment']} {r['effect_abs']:+.3g} "
                f"{r['ci_low']:+.3g} to {r['ci_high']:+.3g}") in groups
        assert f"{r['p_value']:.2g} {r['p_bh']:.2g}" in groups
    drill = page_text(html[html.index('id="drill"'):])
    assert "Benjamini–Hochberg across the 5 customer groups" in drill
    weeks = [w for w in results["metric_weeks"] if w["metric"] == "conversion"]  # (checked in test_report_weeks)
    assert weeks and "(it follows spend_per_customer_week)" in drill
    for w in weeks:
        assert f"bonus {w['week']} {w['n_control']} / {w['n_treatment']}" in drill
        assert f"{w['ci_low']:+.3g} to {w['ci_high']:+.3g}" in drill
    # a run stored before every metric had its weeks: the primary's weekly table, the others none
    older = {k: v for k, v in results.items() if k != "metric_weeks"}
    assert reports.drill_down(older, "spend_per_customer")["weeks"][0]["week"] == results["weeks"][0]["week"]
    assert reports.drill_down(older, "conversion")["weeks"] == []
    figure = html[html.index('id="figures-data"'):]
    assert '"key":"groups"' in figure and "conversion by customer group" in figure
    unknown = client.get(f"/analyses/{run_id}?metric=nonsense").get_data(as_text=True)
    assert "Drill-down: spend_per_customer" in unknown  # an unknown metric falls back to the primary


def test_stages_side_by_side_with_what_changed(app, client, tokens, auth):
    key, run_id = analysed(app, customers=600)
    changed = client.patch(f"/api/v1/pilots/{key}/stages/2", headers=auth("manager"), json={
        "region_codes": ["north"], "allocation": {"control": 0.4, "bonus": 0.6}, "eligible_groups": ["young_parents"]})
    assert changed.status_code == 200, changed.json
    with app.app_context():
        pilot = get_pilot(db.session, key)
        dropped = sorted(set(pilot.stages[0].region_codes) - {"north"})
        run = db.session.get(AnalysisRun, run_id)
        primary, decision = next(r for r in run.results["metrics"] if r["role"] == "primary"), run.decision
    login(client, tokens["analyst"])
    html = client.get(f"/analyses/{run_id}").get_data(as_text=True)
    section = page_text(html[html.index('id="stages"'):html.index("<h2>Figures")])
    assert f"regions dropped: {', '.join(dropped)}" in section
    assert "weights: control 50% → 40%, bonus 50% → 60%" in section and "customer groups: all → young_parents" in section
    assert (f"analysis {run_id}, {NOW:%Y-%m-%d}: {decision} bonus {primary['effect_rel']:+.1%} "
            f"({primary['ci_rel_low']:+.1%} to {primary['ci_rel_high']:+.1%})") in section
    assert "none yet" in section  # the second stage has no analysis yet


def run_cli(*args):
    return CliRunner().invoke(cli, ["analyse", *map(str, args)])


def test_analyse_table_shows_the_relative_effect_in_percent_with_its_interval(tmp_path):
    rng = np.random.default_rng(3)
    arm = rng.choice(["control", "gold"], 2000)
    spend = (rng.gamma(2, 20, 2000) * np.where(arm == "gold", 1.18, 1.0)).round(2)
    path = tmp_path / "export.csv"
    pd.DataFrame({"arm": arm, "spend": spend}).to_csv(path, index=False)
    table = run_cli(path, "--arm", "arm", "--control", "control", "--metric", "spend")
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    header = next(line for line in lines if line.split()[:2] == ["arm", "metric"])
    assert "effect_rel" in header.split() and "ci_rel" in header.split()
    c, t = spend[arm == "control"], spend[arm == "gold"]
    rel = t.mean() / c.mean() - 1  # the relative effect, on the raw rows
    row = next(line for line in lines if line.split()[:1] == ["gold"])
    assert f"{rel:+.1%}" in row.split()
    body = run_cli(path, "--arm", "arm", "--control", "control", "--metric", "spend", "--format", "json").output
    result = json.loads(body)["results"][0]
    assert result["effect_rel"] == pytest.approx(rel, rel=1e-9)
    assert f"[{result['ci_rel_low']:+.1%}, {result['ci_rel_high']:+.1%}]" in row


def test_analyse_messages_print_plain_numbers(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("arm,y\nA,1\nB,29.99\nA,0\n")
    out = run_cli(path, "--arm", "arm", "--control", "A", "--metric", "y:proportion")
    assert out.exit_code == 2 and "a proportion needs 0 or 1, got 29.99" in out.output and "np." not in out.output


def test_the_docs_describe_the_demo_the_first_command_loads(app, backend):
    """README.md and docs/api.md say what the demo holds and recommends: load it as `pilot demo` does
    (its default size) and read it back."""
    if backend[0] != "sqlite":
        pytest.skip("the demo is loaded once, on SQLite (the first README command's database)")
    customers = next(p.default for p in cli.commands["demo"].params if p.name == "customers")
    with app.app_context():
        load_demo(db.session, customers=customers)
        db.session.commit()
        count = lambda model: db.session.query(model).count()  # noqa: E731
        shape = (count(Region), count(Store), count(Customer))
        group_names = [g.name.lower() for g in db.session.query(CustomerGroup).order_by(CustomerGroup.id)]
        programme = db.session.query(Programme).one()
        variants = [v.name.lower() for v in programme.variants]
        pilot = db.session.query(Pilot).one()
        regions = [sorted(s.region_codes) for s in pilot.stages]
        run = db.session.query(AnalysisRun).one()
        rec, variant_names = run.recommendation, {v.key: v.name.lower() for v in programme.variants}
        effect = next(r["effect_rel"] for r in run.results["metrics"] if r["arm"] == rec["arm"] and r["role"] == "primary")
    readme = re.sub(r"\s+", " ", Path("README.md").read_text())
    demo = readme[readme.index("loads the demo retailer"):readme.index("prints an **admin token**")]
    assert f"{shape[0]} regions, {shape[1]} stores, {shape[2]:,} customers" in demo
    assert "the customer groups " + ", ".join(group_names[:-1]) + " and " + group_names[-1] in demo
    assert f'the programme "{programme.name}" with four variants' in demo and len(variants) == 4
    assert all(name in demo.lower() for name in ("5% card", "silver/gold/platinum", "bonus points"))
    assert regions[0] == ["north", "south"] and len(regions[1]) == shape[0] and "north and south, before all regions" in demo
    api = re.sub(r"\s+", " ", Path("docs/api.md").read_text())
    said = re.search(r"the default ([\d,]+) customers: `(\w+)` the ([\w ]+?), about \+(\d+)% spend per customer", api)
    assert said, "docs/api.md names the demo's recommendation"
    assert int(said.group(1).replace(",", "")) == customers
    assert (said.group(2), said.group(3)) == (rec["decision"], variant_names[rec["arm"]])
    assert abs(effect * 100 - int(said.group(4))) < 1.5


def test_a_store_pilot_report_shows_its_decision_test_and_its_stores(app, client, tokens):
    store_pilot(app)
    with app.app_context():
        s = db.session
        run = analysis_runs.create_run(s, CLI.actor, get_pilot(s, "stores"), cutoff=NOW)
        analysis_runs.execute(s, run)
        s.commit()
        enrolled = {e.store_id for e in s.query(Enrolment).filter_by(pilot_id=run.pilot_id)}
        began = datetime.fromisoformat(run.results["stage"]["started_at"])
        counted = sum(1 for t in s.query(Transaction).filter(Transaction.occurred_at >= began)
                      if t.store_id in enrolled and (t.occurred_at.tzinfo and t.occurred_at
                                                     or t.occurred_at.replace(tzinfo=UTC)) <= NOW)
        run_id, stores = run.id, run.results["stores"]
    login(client, tokens["analyst"])
    html = page_text(client.get(f"/analyses/{run_id}").get_data(as_text=True))
    assert "difference_in_differences (spend_per_customer" in html and "the store decision test: ANCOVA" in html
    assert f"({counted} transactions of the pilot's stores in the stage)" in html and counted > 0
    assert "No customer-group breakdown of spend_per_customer in this analysis (a store-randomised pilot" in html
    body = client.get(f"/analyses/{run_id}/tables/stores.csv").get_data(as_text=True)
    rows = list(csv.DictReader(io.StringIO(body)))
    assert list(rows[0])[:len(reports.COLUMNS["stores"])] == list(reports.COLUMNS["stores"])
    assert len(rows) == len(stores) and float(rows[0]["pre_spend"]) == pytest.approx(stores[0]["pre_spend"])
    assert client.get(f"/analyses/{run_id}/tables/groups.csv").get_data(as_text=True) == (
        ",".join(reports.COLUMNS["groups"]) + "\n")
