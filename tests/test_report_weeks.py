"""The week drill-down of every metric: each metric's effect per week since exposure, by its own test
on the week's values, checked against statsmodels and a direct computation on the raw rows, and
shown in the report page and its CSV/JSON exports."""
from __future__ import annotations

import csv
import io
import json
import re
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sqlalchemy import text
from statsmodels.stats.proportion import proportions_ztest
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from pilot import analysis_runs
from pilot.auth import CLI
from pilot.db import db
from pilot.metrics import CATALOGUE
from pilot.models import AnalysisRun, Assignment
from pilot.rollout import get_pilot
from tests.factories import NOW, login, plant
from tests.test_reports import page_text

WEEK = pd.Timedelta(days=7)


def weeks_run(app) -> tuple[int, pd.DataFrame]:
    """An analysed pilot whose exposures spread over two weeks and the clock (units differ in their
    full weeks), and its unit-weeks from the raw rows: each unit's spend, visits and items in each
    week it was exposed for the whole of (zeros where it bought nothing)."""
    key = plant(app, "clear_win", customers=1200, stores=8, key="weeks")
    with app.app_context():
        pilot = get_pilot(db.session, key)
        for row in db.session.query(Assignment).filter_by(pilot_id=pilot.id):
            row.assigned_at += timedelta(days=row.customer_id % 12, hours=row.customer_id * 7 % 24)
        db.session.commit()
        run = analysis_runs.create_run(db.session, CLI.actor, pilot, cutoff=NOW)
        analysis_runs.execute(db.session, run)
        db.session.commit()
        conn = db.session.connection()
        a = pd.read_sql(text("SELECT customer_id, variant, assigned_at FROM assignments WHERE pilot_id = :p"), conn,
                        params={"p": pilot.id})
        t = pd.read_sql(text("SELECT customer_id, occurred_at, amount, items, type FROM transactions"), conn)
        run_id = run.id
    a["assigned_at"] = pd.to_datetime(a.assigned_at, utc=True, format="mixed")
    t["occurred_at"] = pd.to_datetime(t.occurred_at, utc=True, format="mixed")
    a["full_weeks"] = (pd.Timestamp(NOW) - a.assigned_at) // WEEK
    assert a.full_weeks.nunique() > 1
    j = t.merge(a, on="customer_id")
    post = j[(j.occurred_at >= j.assigned_at) & (j.occurred_at < pd.Timestamp(NOW))].copy()
    post["week"] = (post.occurred_at - post.assigned_at) // WEEK
    post["sale"] = (post.type == "sale").astype(float)
    per = post.groupby(["customer_id", "week"]).agg(spend=("amount", "sum"), visits=("sale", "sum"),
                                                    items=("items", "sum")).reset_index()
    grid = pd.DataFrame([(r.customer_id, r.variant, w) for r in a.itertuples() for w in range(r.full_weeks)],
                        columns=["customer_id", "variant", "week"])
    unit_weeks = grid.merge(per, on=["customer_id", "week"], how="left").fillna(
        {"spend": 0.0, "visits": 0.0, "items": 0.0})
    return run_id, unit_weeks


def delta_ratio(num: pd.Series, den: pd.Series) -> tuple[float, float]:
    """Σnum/Σden and its delta-method variance, computed directly from the unit values."""
    n, mx, my = len(num), den.mean(), num.mean()
    c = np.cov(num, den, ddof=1)
    return my / mx, (c[0, 0] / mx ** 2 - 2 * my * c[0, 1] / mx ** 3 + my ** 2 * c[1, 1] / mx ** 4) / n


def test_every_metric_has_its_weeks_checked_on_the_raw_rows(app, client, tokens):
    run_id, uw = weeks_run(app)
    with app.app_context():
        results = db.session.get(AnalysisRun, run_id).results
    rows = {(r["metric"], r["week"]): r for r in results["metric_weeks"] if r["arm"] == "bonus"}
    weeks = sorted(uw.week.unique() + 1)
    assert len(weeks) >= 3
    # every metric of the pilot with a weekly value (retention needs the whole window: none); the run's
    # defined metrics have theirs too (tests/test_defined_metrics*)
    measured = {m["metric"] for m in results["metrics"]}
    assert set(CATALOGUE) - {"retention"} <= {m for m, _ in rows} <= measured - {"retention"}
    assert {w for _, w in rows} == set(weeks)
    for w in weeks:
        part = uw[uw.week == w - 1]
        c, t = part[part.variant == "control"], part[part.variant == "bonus"]
        # a mean: Welch on the week's spend per customer (statsmodels)
        r = rows[("spend_per_customer", w)]
        assert (r["n_control"], r["n_treatment"], r["method"]) == (len(c), len(t), "welch")
        compare = CompareMeans(DescrStatsW(t.spend.to_numpy()), DescrStatsW(c.spend.to_numpy()))
        _, p, _ = compare.ttest_ind(usevar="unequal")
        low, high = compare.tconfint_diff(usevar="unequal")
        assert r["effect_abs"] == pytest.approx(t.spend.mean() - c.spend.mean(), rel=1e-9)
        assert (r["p_value"], r["ci_low"], r["ci_high"]) == pytest.approx((p, low, high), rel=1e-7)
        # a proportion: bought in the week, two-proportion z-test (statsmodels)
        r = rows[("conversion", w)]
        bought_t, bought_c = int((t.visits > 0).sum()), int((c.visits > 0).sum())
        _, p = proportions_ztest([bought_t, bought_c], [len(t), len(c)])
        assert r["method"] == "two_proportion_z"
        assert (r["mean_control"], r["mean_treatment"]) == pytest.approx((bought_c / len(c), bought_t / len(t)))
        assert r["p_value"] == pytest.approx(p, rel=1e-6)
        # a ratio: the week's spend per visit, delta method computed directly on the unit-weeks
        r = rows[("spend_per_visit", w)]
        (rc, vc), (rt, vt) = delta_ratio(c.spend, c.visits), delta_ratio(t.spend, t.visits)
        se = np.sqrt(vc + vt)
        assert r["method"] == "ratio_delta"
        assert (r["mean_control"], r["mean_treatment"], r["se"]) == pytest.approx((rc, rt, se), rel=1e-7)
        assert r["p_value"] == pytest.approx(2 * stats.norm.sf(abs(rt - rc) / se), rel=1e-6)
        assert (r["ci_low"], r["ci_high"]) == pytest.approx((rt - rc - 1.959963985 * se, rt - rc + 1.959963985 * se),
                                                            rel=1e-6)
    # the fading test's weekly table is the primary's (spend): the same numbers
    for f in (r for r in results["weeks"] if r["arm"] == "bonus"):
        assert f["effect_abs"] == pytest.approx(rows[("spend_per_customer", f["week"])]["effect_abs"], rel=1e-12)

    login(client, tokens["analyst"])
    html = client.get(f"/analyses/{run_id}?metric=conversion").get_data(as_text=True)
    drill = page_text(html[html.index('id="weeks-table"'):html.index("</section>", html.index('id="drill"'))])
    for w in weeks:
        r = rows[("conversion", w)]
        assert (f"bonus {w} {r['n_control']} / {r['n_treatment']} {r['mean_control']:.3g} {r['mean_treatment']:.3g} "
                f"{r['effect_abs']:+.3g} {r['ci_low']:+.3g} to {r['ci_high']:+.3g} {r['effect_rel'] * 100:+.1f}%") in drill
    section = page_text(html[html.index('id="drill"'):])
    assert "(two-proportion z-test on the week's values)" in section and "(it follows spend_per_customer_week)" in section
    figures = json.loads(re.search(r'id="figures-data">(.*?)</script>', html, re.S).group(1))
    weekly = next(f for f in figures if f["key"] == "weeks")
    assert weekly["layout"]["title"]["text"].replace("<br>", " ") == "conversion by week since exposure"
    assert weekly["layout"]["yaxis"]["title"]["text"] == "Δ conversion (share of customers, in the week)"
    assert [len(t["x"]) for t in weekly["data"]] == [len(weeks)]  # the one treatment arm, every week
    retention = page_text(client.get(f"/analyses/{run_id}?metric=retention").get_data(as_text=True))
    assert "No week-by-week breakdown of retention: it is measured over the whole window" in retention

    # the exports carry every metric's weeks, the same numbers
    body = client.get(f"/analyses/{run_id}/tables/weeks.csv").get_data(as_text=True)
    exported = [r for r in csv.DictReader(io.StringIO(body)) if r["arm"] == "bonus"]
    for r in exported:
        if r["metric"] != "spend_per_customer_week":
            stored = rows[(r["metric"], int(r["week"]))]
            for k in ("effect_abs", "ci_low", "p_value"):  # (an empty cell: no estimate, e.g. nobody answered)
                assert (float(r[k]) if r[k] else None) == (None if stored[k] is None else pytest.approx(
                    stored[k], rel=1e-12)), (r["metric"], k)
            assert r["method"] == stored["method"]
    assert {r["metric"] for r in exported} == {m for m, _ in rows} | {"spend_per_customer_week"}
    json_rows = client.get(f"/analyses/{run_id}/tables/weeks.json").json
    assert len(json_rows) == len(results["weeks"]) + len(results["metric_weeks"])
    assert any(r["metric"] == "spend_per_visit" and r["method"] == "ratio_delta" for r in json_rows)
