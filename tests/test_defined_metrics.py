"""Defined metrics in the analysis: each aggregation kind in SQL against pandas on the raw event rows,
CUPED of a defined primary against statsmodels OLS, versions recorded, Spark and store pilots refused."""
from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from sqlalchemy import insert, text
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from pilot import analysis_runs
from pilot.aggregation import customer_cube
from pilot.auth import CLI
from pilot.db import db
from pilot.errors import Invalid
from pilot.metric_columns import info, run_definitions
from pilot.metric_definitions import define
from pilot.models import Assignment, CustomerEvent
from pilot.rollout import get_pilot
from tests.factories import NOW, plant, run_analysis

PRE_DAYS = analysis_runs.PRE_DAYS


def ev(type_, aggregation, **more):
    return {"source": "events", "type": type_, "aggregation": aggregation, **more}


# one definition per aggregation kind (and filters, value_at_least, covariates, a ratio, a transactions measure)
DEFINITIONS = [
    {"key": "ios_sessions", "kind": "mean", "covariate": True, **ev("app_session", "count", filters={"os": "ios"})},
    {"key": "points_sum", "kind": "mean", **ev("points_redeemed", "sum", field="value")},
    {"key": "best_answer", "kind": "mean", **ev("survey_nps", "max", field="value")},
    {"key": "last_answer", "kind": "mean", "covariate": True, **ev("survey_nps", "last", field="value")},
    {"key": "redeemers", "kind": "proportion", **ev("points_redeemed", "any")},
    {"key": "promoters", "kind": "proportion", **ev("survey_nps", "any", value_at_least=9)},
    {"key": "net_promoter", "kind": "mean", "covariate": True, **ev("survey_nps", "nps")},
    {"key": "resolution", "kind": "ratio", "covariate": True, "numerator": ev("complaint_resolved", "count"),
     "denominator": ev("complaint_opened", "count")},
    {"key": "sales_amount", "kind": "mean",
     **{"source": "transactions", "filters": {"type": "sale"}, "aggregation": "sum", "field": "amount"}},
]


def define_all(app, definitions=DEFINITIONS):
    with app.app_context():
        for d in definitions:
            define(db.session, CLI.actor, {"name": d["key"], "description": "", "good_direction": "up", **d})
        db.session.commit()


def event_rows(app, key: str, seed: int = 5, nps_shift: dict[str, float] | None = None,
               nps_mean: float = 7.5) -> list[dict]:
    """Events of every kind for the pilot's customers, over the pre-period, the gap before exposure and
    the window (and some before the pre-period and after the cut-off, which no window counts);
    `nps_shift`: a planted change of the NPS answers per arm."""
    rng = np.random.default_rng(seed)
    with app.app_context():
        pilot = get_pilot(db.session, key)
        units = db.session.query(Assignment.customer_id, Assignment.variant, Assignment.assigned_at).filter_by(
            pilot_id=pilot.id).all()
        start = pilot.started_at
    rows = []
    lo, hi = start - timedelta(days=PRE_DAYS + 5), NOW + timedelta(days=1)
    span = (hi - lo).total_seconds()
    for customer, variant, _ in units:
        for type_, rate in (("app_session", 4), ("points_redeemed", 0.8), ("survey_nps", 1.2),
                            ("complaint_opened", 0.6), ("complaint_resolved", 0.4)):
            for _ in range(rng.poisson(rate)):
                when = lo + timedelta(seconds=float(rng.uniform(0, span)))
                value = None
                if type_ == "survey_nps":
                    value = float(np.clip(np.round(rng.normal(nps_mean + (nps_shift or {}).get(variant, 0.0), 2)), 0, 10))
                elif type_ == "points_redeemed":
                    value = float(rng.integers(50, 500))
                rows.append({"event_id": f"e{len(rows)}", "customer_id": customer, "occurred_at": when,
                             "type": type_, "value": value,
                             "attributes": {"os": ["ios", "android"][int(rng.integers(0, 2))]}})
    return rows


def insert_events(app, rows: list[dict]) -> None:
    with app.app_context():
        db.session.execute(insert(CustomerEvent), [{"source": "test", "batch_id": 0, "batch_row": i, **r}
                                                   for i, r in enumerate(rows)])
        db.session.commit()


def reference(units: pd.DataFrame, events: pd.DataFrame, tx: pd.DataFrame, start, definitions,
              week: int | None = None) -> pd.DataFrame:
    """Each definition's per-unit columns computed in pandas from the raw rows (the SQL's reference);
    `week`: the window columns' values in that week since exposure (0-based) instead."""
    pre_start = pd.Timestamp(start - timedelta(days=PRE_DAYS))
    u = units.set_index("customer_id")
    out = pd.DataFrame(index=u.index)

    def window(frame, pre):
        j = frame.merge(units[["customer_id", "assigned_at"]], on="customer_id")
        if pre:
            return j[(j.occurred_at >= pre_start) & (j.occurred_at < pd.Timestamp(start))]
        j = j[(j.occurred_at >= j.assigned_at) & (j.occurred_at < pd.Timestamp(NOW))]
        return j if week is None else j[(j.occurred_at - j.assigned_at) // pd.Timedelta(days=7) == week]

    def measure(m, pre):
        frame = events if m["source"] == "events" else tx
        rows = window(frame, pre)
        if m["source"] == "events":
            rows = rows[rows.type == m["type"]]
            for k, v in (m.get("filters") or {}).items():
                rows = rows[rows.attributes.map(lambda a, k=k: (a or {}).get(k)) == v]
            if m.get("value_at_least") is not None:
                rows = rows[rows.value >= m["value_at_least"]]
        else:
            for k, v in (m.get("filters") or {}).items():
                rows = rows[rows[k] == v]
        g = rows.sort_values(["occurred_at", "id"]).groupby("customer_id")
        agg = m["aggregation"]
        if agg in ("count", "any"):
            s = g.size().astype(float)
        elif agg == "sum":
            s = g[m["field"]].sum()
        elif agg == "max":
            s = g[m["field"]].max()
        elif agg == "last":
            s = g[m["field"]].last()
        else:  # nps: the last answer's score, and who answered
            last = g["value"].last()
            return (pd.Series(np.select([last >= 9, last >= 7], [100.0, 0.0], -100.0), index=last.index),
                    pd.Series(1.0, index=last.index))
        return s, None
    for i, d in enumerate(definitions):
        m = info(d, i)
        for pre in (False, True) if d.get("covariate") and week is None else (False,):
            p = "pre_" if pre else ""
            parts = [("value", d["numerator"]), ("other", d["denominator"])] if d["kind"] == "ratio" \
                else [("value", d["measure"])]
            for role, spec in parts:
                s, answered = measure(spec, pre)
                name = p + (m.value if role == "value" else m.other if d["kind"] == "ratio" else m.value)
                col = s.reindex(out.index).fillna(0.0)
                out[name] = (col > 0).astype(float) if d["kind"] == "proportion" else col
                if answered is not None:
                    out[f"{p}{m.value}n"] = answered.reindex(out.index).fillna(0.0)
    return out.join(u[["variant"]])


def raw(app, key: str):
    with app.app_context():
        conn = db.session.connection()
        pilot = get_pilot(db.session, key)
        a = pd.read_sql(text("SELECT customer_id, variant, assigned_at FROM assignments WHERE pilot_id = :p"),
                        conn, params={"p": pilot.id})
        e = pd.read_sql(text("SELECT id, customer_id, occurred_at, type, value, attributes FROM customer_events"), conn)
        t = pd.read_sql(text("SELECT id, customer_id, occurred_at, type, amount FROM transactions"), conn)
        start = pilot.started_at
    for frame, col in ((a, "assigned_at"), (e, "occurred_at"), (t, "occurred_at")):
        frame[col] = pd.to_datetime(frame[col], utc=True, format="mixed")
    e["attributes"] = e.attributes.map(lambda v: v if isinstance(v, dict) else json.loads(v))
    t["amount"] = t.amount.astype(float)
    return a, e, t, start


def test_each_aggregation_kind_equals_pandas_on_the_raw_event_rows(app):
    key = plant(app, "clear_win", customers=500, stores=8, key="kinds", post_weeks=4)
    with app.app_context():  # exposures spread over ten days, so windows differ per unit
        pilot = get_pilot(db.session, key)
        for row in db.session.query(Assignment).filter_by(pilot_id=pilot.id):
            row.assigned_at += timedelta(days=row.customer_id % 10, hours=row.customer_id * 7 % 24)
        db.session.commit()
    rows = event_rows(app, key)
    # ties: two answers at the same moment — the later id is the last
    rows += [dict(rows[0], event_id="tie", value=3.0)] if rows[0]["type"] == "survey_nps" else []
    insert_events(app, rows)
    define_all(app)
    with app.app_context():
        pilot = get_pilot(db.session, key)
        defined = run_definitions(db.session, pilot, "database")["defined_metrics"]
        keys = [d["key"] for d in defined]  # (with the shipped definitions)
        assert set(keys) >= {d["key"] for d in DEFINITIONS} and keys == sorted(keys)
        cube = customer_cube(db.session, pilot, pilot.stage(1), NOW, PRE_DAYS, defined=defined)
    a, e, t, start = raw(app, key)
    ref = reference(a, e, t, start, defined)
    names = [c for c in ref.columns if c != "variant"]
    mine = [n for n in names if keys[int(n.removeprefix("pre_").strip("dn"))] in {d["key"] for d in DEFINITIONS}]
    assert len(mine) == 17
    for variant in ("control", "bonus"):
        part, sums = ref[ref.variant == variant], cube.arm(variant)
        assert sums["n"] == len(part)
        for name in names:
            assert sums[name] == pytest.approx(part[name].sum(), rel=1e-9, abs=1e-9), (variant, name)
        for i, d in enumerate(defined):  # the cross-products each test reads
            m = info(d, i)
            pairs = [(m.value, m.value)] + ([(m.value, m.other), (m.other, m.other)] if m.other else [])
            for x, y in pairs:
                assert sums[f"{x}*{y}"] == pytest.approx((part[x] * part[y]).sum(), rel=1e-9), (d["key"], x, y)
    # the weeks since exposure carry them too (over the units exposed for the whole week)
    a["full_weeks"] = (pd.Timestamp(NOW) - a.assigned_at) // pd.Timedelta(days=7)
    for w in (0, 2):
        whole = a[a.full_weeks > w]
        ref_w = reference(whole, e, t, start, defined, week=w)
        for variant in ("control", "bonus"):
            part, sums = ref_w[ref_w.variant == variant], cube.by_week[(variant, w)]
            for name in [n for n in mine if not n.startswith("pre_")]:
                assert sums.get(name, 0.0) == pytest.approx(part[name].sum(), rel=1e-9, abs=1e-9), (w, variant, name)
                assert sums.get(f"{name}*{name}", 0.0) == pytest.approx((part[name] ** 2).sum(), rel=1e-9, abs=1e-9)
    # every kind is non-trivial: units with and without matching rows, pre-period and window apart
    assert all(0 < (ref[n] != 0).mean() < 1 for n in mine), [(n, (ref[n] != 0).mean()) for n in mine]
    nps = info(next(d for d in defined if d["key"] == "net_promoter"), [d["key"] for d in defined].index("net_promoter"))
    assert nps.test == "ratio" and (ref[nps.value].abs() <= 100 * ref[nps.other]).all()


def analyse(app, key: str):
    run = run_analysis(app, key)
    return run.id, run.config, run.results, run.recommendation


def test_defined_primary_with_cuped_against_ols_end_to_end(app, client, auth):
    """Events in through the API, a defined primary metric with a covariate: its effect is the OLS
    coefficient of the arm on the raw rows' per-unit values with the pre-period value as covariate."""
    key = plant(app, "clear_win", customers=600, stores=8, key="e2e", post_weeks=4)
    rows = event_rows(app, key, seed=9)
    with app.app_context():
        ids = dict(db.session.execute(text("SELECT id, external_id FROM customers")).all())
    body = [{"event_id": r["event_id"], "customer": ids[r["customer_id"]], "type": r["type"],
             "occurred_at": r["occurred_at"].isoformat(), "attributes": r["attributes"],
             **({"value": r["value"]} if r["value"] is not None else {})} for r in rows]
    for chunk in range(0, len(body), 5000):
        resp = client.post("/api/v1/events?source=app", json={"events": body[chunk:chunk + 5000]}, headers=auth("feed"))
        assert resp.status_code == 200, resp.get_json()
    assert client.post("/api/v1/events?source=app", json={"events": body[:100]},
                       headers=auth("feed")).get_json()["accepted"] == 0  # a replay adds nothing
    define_all(app, [DEFINITIONS[0]])
    with app.app_context():
        pilot = get_pilot(db.session, key)
        pilot.primary_metric = "ios_sessions"  # (as the pilot was created: a defined key is a metric key)
        db.session.commit()
    run_id, config, results, recommendation = analyse(app, key)
    at = [d["key"] for d in config["defined_metrics"]].index("ios_sessions")
    assert config["defined_metrics"][at]["version"] == 1  # the run records the definition it used
    row = next(r for r in results["metrics"] if r["metric"] == "ios_sessions" and r["arm"] == "bonus")
    assert row["role"] == "primary" and row["label"] == "ios_sessions (v1)" and row["method"] == "cuped"
    a, e, t, start = raw(app, key)
    ref = reference(a, e, t, start, config["defined_metrics"])
    ref["treated"] = (ref.variant == "bonus").astype(float)
    ref["y"], ref["pre_c"] = ref[f"d{at}"], ref[f"pre_d{at}"] - ref[f"pre_d{at}"].mean()
    # CUPED: θ on the pooled units, then Welch (statsmodels) on the adjusted values — exactly
    theta = np.cov(ref.y, ref.pre_c)[0, 1] / ref.pre_c.var()
    ref["adj"] = ref.y - theta * ref.pre_c
    cm = CompareMeans(DescrStatsW(ref.adj[ref.treated == 1].to_numpy()), DescrStatsW(ref.adj[ref.treated == 0].to_numpy()))
    _, p, _ = cm.ttest_ind(usevar="unequal")
    assert row["effect_abs"] == pytest.approx(ref.adj[ref.treated == 1].mean() - ref.adj[ref.treated == 0].mean(),
                                              rel=1e-7)
    assert row["p_value"] == pytest.approx(p, rel=1e-6)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(cm.tconfint_diff(usevar="unequal"), rel=1e-6)
    # and the regression-adjusted estimate it approximates: OLS of the value on the arm and the covariate
    ols = smf.ols("y ~ treated + pre_c", data=ref).fit()
    assert abs(row["effect_abs"] - ols.params["treated"]) < 0.05 * ols.bse["treated"]
    assert row["se"] == pytest.approx(ols.bse["treated"], rel=0.05)
    assert row["variance_reduction"] > 0
    weeks = [r for r in results["metric_weeks"] if r["metric"] == "ios_sessions" and r["arm"] == "bonus"]
    assert [r["week"] for r in weeks] == [1, 2, 3, 4]  # the week drill-down carries it
    assert recommendation["decision"] in ("extend", "stop", "advance", "adjust")
    assert any(r.get("metric") == "ios_sessions" for r in recommendation["reasons"]) or recommendation["arm"]


def test_spark_and_store_pilots_refuse_a_defined_metric_clearly(app):
    key = plant(app, "too_few", key="spk")
    define_all(app, [DEFINITIONS[0]])
    with app.app_context():
        pilot = get_pilot(db.session, key)
        skipped = run_definitions(db.session, pilot, "spark")  # secondaries are left out, and say so
        assert skipped["defined_metrics"] == [] and "ios_sessions" in skipped["defined_metrics_skipped"]
        pilot.primary_metric = "ios_sessions"
        with pytest.raises(Invalid) as refused:
            run_definitions(db.session, pilot, "spark")
        assert refused.value.code == "defined_metric_unsupported" and "engine" in refused.value.details["fields"]
        pilot.unit = "store"
        with pytest.raises(Invalid) as refused:
            run_definitions(db.session, pilot, "database")
        assert "primary_metric" in refused.value.details["fields"]
        db.session.rollback()
