"""Store-randomised pilots: matched on pre-period sales, analysed by difference-in-differences and
ANCOVA on store-level values, checked against statsmodels on the raw rows."""
from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest
import statsmodels.formula.api as smf
from sqlalchemy import text
from statsmodels.stats.weightstats import ttest_ind

from pilot import analysis_runs
from pilot.auth import CLI
from pilot.db import db
from pilot.programmes import get_programme
from pilot.rollout import create_pilot, get_pilot, transition
from pilot.simulate import backdate
from tests.factories import NOW, plant


def test_store_pilot_did_and_ancova_equal_statsmodels(app):
    plant(app, "clear_win", customers=1500, stores=24, key="base")
    with app.app_context():
        s = db.session
        pilot = create_pilot(s, CLI.actor, get_programme(s, "base-programme"), {
            "key": "stores", "name": "Store pilot", "unit": "store", "layer": "stores", "salt": "fixed",
            "primary_metric": "spend_per_customer", "independent_of": ["base"],  # the planted customer pilot
            "stages": [{"region_codes": ["north", "south", "east", "west", "central"],
                        "allocation": {"control": 0.5, "bonus": 0.5}}]})
        start = NOW - timedelta(weeks=4)
        pilot.started_at = start  # matching reads the pre-period before the start
        transition(s, CLI.actor, pilot, "start")
        backdate(s, pilot, start)
        run = analysis_runs.create_run(s, CLI.actor, get_pilot(s, "stores"), cutoff=NOW)
        analysis_runs.execute(s, run)
        s.commit()
        arms = pd.read_sql(text("SELECT store_id, arm FROM enrolments WHERE pilot_id = :p"), s.connection(),
                           params={"p": pilot.id})
        tx = pd.read_sql(text("SELECT store_id, occurred_at, amount FROM transactions"), s.connection())
    tx["occurred_at"] = pd.to_datetime(tx["occurred_at"], utc=True, format="mixed")
    days = (NOW - start).total_seconds() / 86400
    post = tx[(tx.occurred_at >= pd.Timestamp(start)) & (tx.occurred_at < pd.Timestamp(NOW))]
    pre = tx[(tx.occurred_at >= pd.Timestamp(start - (NOW - start))) & (tx.occurred_at < pd.Timestamp(start))]
    stores = arms.set_index("store_id")
    stores["y"] = post.groupby("store_id").amount.sum().reindex(stores.index, fill_value=0) / days
    stores["x"] = pre.groupby("store_id").amount.sum().reindex(stores.index, fill_value=0) / days
    stores["treated"] = (stores.arm == "bonus").astype(float)
    counts = stores.arm.value_counts()
    assert counts.sum() == 24 and counts.min() >= 10  # matched in strata within regions of 4–5 stores
    rows = {r["method"]: r for r in run.results["metrics"] if r["metric"] == "spend_per_customer"}
    change_t = (stores.y - stores.x)[stores.treated == 1]
    change_c = (stores.y - stores.x)[stores.treated == 0]
    _, p, _ = ttest_ind(change_t, change_c, usevar="unequal")
    assert rows["difference_in_differences"]["effect_abs"] == pytest.approx(change_t.mean() - change_c.mean(), rel=1e-6)
    assert rows["difference_in_differences"]["p_value"] == pytest.approx(p, rel=1e-6)
    ols = smf.ols("y ~ treated + x", data=stores).fit()
    assert rows["ancova"]["effect_abs"] == pytest.approx(ols.params["treated"], rel=1e-6)
    assert rows["ancova"]["p_value"] == pytest.approx(ols.pvalues["treated"], rel=1e-6)
    assert run.results["unit"] == "store"
    assert run.results["srm"]["observed"] == [int(counts["control"]), int(counts["bonus"])]
