"""`pilot analyse` on flat files: the same numbers as scipy/statsmodels on the rows, clear errors."""
import json

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from click.testing import CliRunner
from scipy import stats
from statsmodels.stats.meta_analysis import combine_effects
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportions_ztest

from pilot import csv_analysis
from pilot.cli import cli
from tests.stats_helpers import cr2_reference


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    rng = np.random.default_rng(5)
    n = 9000
    arm = rng.choice(["control", "gold", "bonus"], n, p=[0.4, 0.3, 0.3])
    store = rng.integers(0, 30, n)
    history = rng.gamma(2, 30, n)
    lift = np.select([arm == "gold", arm == "bonus"], [4.0, 1.0], 0.0)
    spend = np.maximum(0, 0.5 * history + lift + rng.normal(20, 25, n) + store * 0.3)
    visits = rng.poisson(3, n) + 1
    df = pd.DataFrame({"group": arm, "store": store, "segment": rng.choice(["young", "single", "senior"], n),
                       "history": history.round(2), "spend": spend.round(2), "visits": visits,
                       "converted": (rng.random(n) < 0.2 + 0.03 * (arm == "gold")).astype(int)})
    path = tmp_path_factory.mktemp("flat") / "export.csv"
    df.to_csv(path, index=False)
    return path, df


def run(*args):
    return CliRunner().invoke(cli, ["analyse", *map(str, args)])


def test_json_matches_references_on_raw_rows(export, monkeypatch):
    path, df = export
    monkeypatch.setattr(csv_analysis, "CHUNK_ROWS", 1000)  # many chunks: the sums must add up across them
    out = run(path, "--arm", "group", "--control", "control", "--metric", "spend", "--metric", "converted:proportion",
              "--metric", "spv=spend/visits", "--covariate", "spend=history", "--cluster", "store",
              "--weights", "control=0.4,gold=0.3,bonus=0.3", "--sequential", "--format", "json")
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["arms"] == {a: {"n": int((df.group == a).sum())} for a in ("control", "bonus", "gold")}
    counts = [int((df.group == a).sum()) for a in ("control", "bonus", "gold")]
    assert report["srm"]["p_value"] == pytest.approx(stats.chisquare(counts, np.array([0.4, 0.3, 0.3]) * len(df)).pvalue)
    rows = {(r["arm"], r["metric"], r["method"]): r for r in report["results"]}
    assert len(rows) == 2 * (3 + 1 + 2)  # per arm: 3 primary, cuped for spend, cluster for spend and converted
    c = df[df.group == "control"]
    for arm in ("gold", "bonus"):
        t = df[df.group == arm]
        welch = rows[(arm, "spend", "welch")]
        assert welch["p_value"] == pytest.approx(stats.ttest_ind(t.spend, c.spend, equal_var=False).pvalue, rel=1e-8)
        z, p = proportions_ztest([t.converted.sum(), c.converted.sum()], [len(t), len(c)])
        assert rows[(arm, "converted", "two_proportion_z")]["p_value"] == pytest.approx(p, rel=1e-8)
        ratio = rows[(arm, "spv", "ratio_delta")]
        assert ratio["effect_abs"] == pytest.approx(t.spend.sum() / t.visits.sum() - c.spend.sum() / c.visits.sum())
        both = pd.concat([c, t])
        fit = smf.ols("spend ~ treated", both.assign(treated=(both.group == arm).astype(float))).fit(
            cov_type="cluster", cov_kwds={"groups": both.store}, use_t=True)
        clustered = rows[(arm, "spend", "cluster_robust")]
        x = np.column_stack([np.ones(len(both)), (both.group == arm).to_numpy(float)])
        _, se, df_bm = cr2_reference(x, both.spend.to_numpy(), list(both.store), [0, 1])  # CR2, Bell–McCaffrey df
        assert clustered["se"] == pytest.approx(se, rel=1e-8) and clustered["df"] == pytest.approx(df_bm, rel=1e-8)
        assert clustered["se"] == pytest.approx(fit.bse["treated"], rel=0.05)  # close to CR1 at 30 stores
        assert rows[(arm, "spend", "cuped")]["se"] < welch["se"]
        assert set(welch) >= {"seq_ci_low", "seq_ci_high", "seq_p_value", "effect_rel", "ci_rel_low", "p_value_holm"}
        assert welch["seq_ci_low"] < welch["ci_low"]
    welch_rows = [r for r in report["results"] if r["method"] == "welch"]
    assert [r["p_value_holm"] for r in welch_rows] == pytest.approx(
        list(multipletests([r["p_value"] for r in welch_rows], method="holm")[1]))


def test_segments_and_heterogeneity(export):
    path, df = export
    report = json.loads(run(path, "--arm", "group", "--control", "control", "--metric", "spend", "--segment",
                            "segment", "--format", "json").output)
    seg = [r for r in report["segments"]["results"] if r["arm"] == "gold"]
    assert sorted(r["segment"] for r in seg) == ["senior", "single", "young"]
    for r in seg:
        part = df[df.segment == r["segment"]]
        ref = stats.ttest_ind(part[part.group == "gold"].spend, part[part.group == "control"].spend, equal_var=False)
        assert r["p_value"] == pytest.approx(ref.pvalue, rel=1e-8)
    het = [h for h in report["segments"]["heterogeneity"] if h["arm"] == "gold"][0]
    ref = combine_effects(np.array([r["effect_abs"] for r in seg]), np.array([r["se"] for r in seg]) ** 2)
    assert het["q"] == pytest.approx(ref.q, rel=1e-9)


def test_table_format(export):
    path, _ = export
    out = run(path, "--arm", "group", "--control", "control", "--metric", "spend")
    assert out.exit_code == 0 and "sample-ratio check" in out.output and "welch" in out.output


@pytest.mark.parametrize("body, args, message", [
    ("arm,y\nA,1\nB,2\nA,x\n", ["--metric", "y"], "column 'y', row 3: value is not a number: 'x'"),
    ("arm,y\nA,1\nB,\n", ["--metric", "y"], "column 'y', row 2: value is empty"),
    ("arm,y\nA,1\nB,2\n", ["--metric", "z"], "column(s) not in the file: z"),
    ("arm,y\nA,1\nB,2\n", ["--metric", "y", "--weights", "A=1,B=1,C=1"], "arm(s) C in --weights have no rows"),
    ("arm,y\nB,1\nC,2\n", ["--metric", "y"], "control value 'A' does not occur"),
    ("arm,y\nA,1\nB,2\n", ["--metric", "y:proportion"], "column 'y', row 2: a proportion needs 0 or 1"),
    ("arm,y\n", ["--metric", "y"], "no rows"),
    ("arm,y\nA,1\nB,2\n", ["--metric", "y", "--covariate", "q=y"], "expected METRIC=COLUMN"),
])
def test_bad_input_is_exit_2_naming_column_and_row(tmp_path, body, args, message):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    out = run(path, "--arm", "arm", "--control", "A", *args)
    assert out.exit_code == 2 and message in out.output, out.output
