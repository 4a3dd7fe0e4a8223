"""`pilot analyse`: stream an experiment export (CSV) into sufficient statistics and test it.

The file is read in chunks by pandas' C parser and reduced per chunk to sums by
(arm, segment, cluster); only those sums are kept, so memory does not grow with the file.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from experiments.cluster import FEW_CLUSTERS, cluster_robust
from experiments.cuped import cuped
from experiments.heterogeneity import cochran_q
from experiments.means import welch
from experiments.proportions import two_proportion_z
from experiments.ratio import ratio_delta
from experiments.results import EffectResult, InferenceConfig
from experiments.srm import srm_test
from experiments.statistics import ClusterSumStatistic, RatioStatistic, RegressionAdjustedStatistic, SampleMeanStatistic
from pilot.result_rows import adjust_p_values, clean, effect_row, sequential_columns

CHUNK_ROWS = 100_000
# a row's columns after its arm and metric (the CLI's names; Holm's p-value follows as `p_value_holm`)
COLUMNS = ("method", "n_control", "n_treatment", "mean_control", "mean_treatment", "effect_abs", "se", "ci_low",
           "ci_high", "p_value", "effect_rel", "ci_rel_low", "ci_rel_high", "df")


class FlatFileError(Exception):
    """Bad input: the message names the column and row."""


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str  # mean | proportion | ratio
    columns: tuple[str, ...]
    covariate: str | None = None


def parse_metric(spec: str) -> Metric:
    """`COL` (mean), `COL:proportion` (0/1) or `NAME=NUM/DEN` (ratio of sums)."""
    ratio = re.fullmatch(r"([^=]+)=([^/]+)/(.+)", spec)
    if ratio:
        return Metric(ratio[1].strip(), "ratio", (ratio[2].strip(), ratio[3].strip()))
    column, _, kind = spec.partition(":")
    if kind not in ("", "proportion", "mean"):
        raise FlatFileError(f"metric {spec!r}: the kind after ':' must be 'proportion' (or nothing for a mean)")
    return Metric(column.strip(), kind or "mean", (column.strip(),))


def parse_weights(text: str | None) -> dict[str, float] | None:
    """`A=0.5,B=0.25,C=0.25` into a mapping."""
    if not text:
        return None
    out: dict[str, float] = {}
    for part in text.split(","):
        arm, _, weight = part.partition("=")
        try:
            out[arm.strip()] = float(weight)
        except ValueError:
            raise FlatFileError(f"--weights: {part!r} is not ARM=WEIGHT") from None
    return out


def _sum_columns(metrics: list[Metric]) -> dict[str, tuple[str, ...]]:
    """The per-row products whose sums each metric needs, by output name."""
    cols: dict[str, tuple[str, ...]] = {}
    for m in metrics:
        if m.kind == "ratio":
            num, den = m.columns
            cols.update({f"{m.name}|m": (num,), f"{m.name}|mm": (num, num), f"{m.name}|d": (den,),
                         f"{m.name}|dd": (den, den), f"{m.name}|md": (num, den)})
            continue
        y = m.columns[0]
        cols.update({f"{m.name}|y": (y,), f"{m.name}|yy": (y, y)})
        if m.covariate:
            x = m.covariate
            cols.update({f"{m.name}|x": (x,), f"{m.name}|xx": (x, x), f"{m.name}|xy": (x, y)})
    return cols


def aggregate(path: str, arm: str, metrics: list[Metric], keys: list[str]) -> pd.DataFrame:
    """Sums (and counts `n`) per (arm, *keys), streamed over the file."""
    numeric = sorted({c for m in metrics for c in m.columns} | {m.covariate for m in metrics if m.covariate})
    groups = [arm, *keys]
    products = _sum_columns(metrics)
    try:
        header = pd.read_csv(path, nrows=0).columns
    except (OSError, pd.errors.EmptyDataError) as exc:
        raise FlatFileError(f"cannot read {path}: {exc}") from None
    missing = [c for c in [*groups, *numeric] if c not in header]
    if missing:
        raise FlatFileError(f"column(s) not in the file: {', '.join(missing)} (it has: {', '.join(header)})")
    total: pd.DataFrame | None = None
    options = dict(usecols=list(dict.fromkeys([*groups, *numeric])), chunksize=CHUNK_ROWS,
                   dtype={g: "category" for g in groups}, keep_default_na=False, na_values={c: [""] for c in numeric})
    start = 0
    with pd.read_csv(path, **options) as reader:
        for chunk in reader:
            _check(chunk, numeric, groups, metrics, start)
            sums = pd.DataFrame({name: _product(chunk, cols) for name, cols in products.items()})
            sums["n"] = 1
            for g in groups:
                sums[g] = chunk[g].to_numpy()
            part = sums.groupby(groups, sort=False, observed=True).sum()
            total = part if total is None else total.add(part, fill_value=0)
            start += len(chunk)
    if total is None or start == 0:
        raise FlatFileError("the file has a header but no rows")
    return total


def _product(chunk: pd.DataFrame, cols: tuple[str, ...]) -> np.ndarray:
    out = chunk[cols[0]].to_numpy(dtype=float)
    for c in cols[1:]:
        out = out * chunk[c].to_numpy(dtype=float)
    return out


def _check(chunk: pd.DataFrame, numeric: list[str], groups: list[str], metrics: list[Metric], start: int) -> None:
    for col in numeric:
        values = chunk[col] if pd.api.types.is_numeric_dtype(chunk[col]) else pd.to_numeric(chunk[col], errors="coerce")
        bad = ~np.isfinite(values.to_numpy(dtype=float))
        if bad.any():
            pos = int(np.argmax(bad))
            raw = chunk[col].iloc[pos]
            if isinstance(raw, str):
                what = "is empty" if raw == "" else f"is not a number: {raw!r}"
            else:
                what = "is empty" if pd.isna(raw) else f"is not finite: {_plain(raw)!r}"
            raise FlatFileError(f"column {col!r}, row {start + pos + 1}: value {what}")
        chunk[col] = values
    for m in metrics:
        if m.kind == "proportion":
            bad = ~chunk[m.columns[0]].isin([0, 1])
            if bad.any():
                pos = int(np.argmax(bad.to_numpy()))
                raise FlatFileError(f"column {m.columns[0]!r}, row {start + pos + 1}: a proportion needs 0 or 1, "
                                    f"got {_plain(chunk[m.columns[0]].iloc[pos])!r}")
    for g in groups:
        empty = chunk[g] == ""
        if empty.any():
            raise FlatFileError(f"column {g!r}, row {start + int(np.argmax(empty.to_numpy())) + 1}: value is empty")


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python number it holds (its repr in a message is `29.99`, not `np.float64(29.99)`)."""
    return value.item() if isinstance(value, np.generic) else value


def _stat(sums: pd.Series, metric: Metric, adjusted: bool = False):
    g = lambda k: float(sums[f"{metric.name}|{k}"])  # noqa: E731
    n = int(sums["n"])
    if metric.kind == "ratio":
        return RatioStatistic(n, g("m"), g("mm"), g("d"), g("dd"), g("md"))
    if adjusted:
        return RegressionAdjustedStatistic(n, g("y"), g("yy"), g("x"), g("xx"), g("xy"))
    return SampleMeanStatistic(n, g("y"), g("yy"))


def _compare(metric: Metric, control: pd.Series, treatment: pd.Series, config: InferenceConfig,
             adjusted: bool = False) -> EffectResult:
    if adjusted:
        return cuped(_stat(control, metric, True), _stat(treatment, metric, True), config).effect
    test = {"mean": welch, "proportion": two_proportion_z, "ratio": ratio_delta}[metric.kind]
    return test(_stat(control, metric), _stat(treatment, metric), config)


def _row(arm: str, metric: Metric, result: EffectResult, seq: bool, alpha: float) -> dict[str, Any]:
    message = {"message": result.message} if result.message else {}
    always_valid = sequential_columns(result, alpha, relative=False) if seq else {}
    return {"arm": arm, "metric": metric.name, **effect_row(result, COLUMNS, **message, **always_valid)}


def _clusters(table: pd.DataFrame, arm: str, control: str, treatment: str, metric: Metric, cluster: str) -> dict:
    by = table.groupby(level=[arm, cluster], observed=True).sum()
    out: dict[object, list[ClusterSumStatistic]] = {}
    for (a, c), sums in by.iterrows():
        if a in (control, treatment):
            pair = out.setdefault(c, [ClusterSumStatistic(0, 0.0), ClusterSumStatistic(0, 0.0)])
            pair[a == treatment] = ClusterSumStatistic(int(sums["n"]), float(sums[f"{metric.name}|y"]))
    return {c: tuple(p) for c, p in out.items()}


def _results(table: pd.DataFrame, arm: str, control: str, arms: list[str], metrics: list[Metric],
             cluster: str | None, config: InferenceConfig, seq: bool) -> list[dict[str, Any]]:
    by_arm = table.groupby(level=arm, observed=True).sum()
    rows = []
    for treatment in arms:
        for m in metrics:
            rows.append(_row(treatment, m, _compare(m, by_arm.loc[control], by_arm.loc[treatment], config), seq,
                             config.alpha))
            if m.covariate:
                adjusted = _compare(m, by_arm.loc[control], by_arm.loc[treatment], config, adjusted=True)
                rows.append(_row(treatment, m, adjusted, seq, config.alpha))
            if cluster and m.kind != "ratio":
                res = cluster_robust(_clusters(table, arm, control, treatment, m, cluster), config)
                rows.append(_row(treatment, m, res, seq, config.alpha))
    for method in {r["method"] for r in rows}:
        adjust_p_values([r for r in rows if r["method"] == method], "p_value_holm")
    return rows


def analyse(path: str, arm: str, control: str, metric_specs: list[str], covariates: list[str] | None = None,
            cluster: str | None = None, segment: str | None = None, weights: str | None = None,
            alpha: float = 0.05, seq: bool = False) -> dict[str, Any]:
    """The whole report of a flat file, as plain data."""
    metrics = _with_covariates([parse_metric(s) for s in metric_specs], covariates or [])
    if not metrics:
        raise FlatFileError("give at least one --metric")
    if not 0 < alpha < 1:
        raise FlatFileError("--alpha must be between 0 and 1")
    keys = [k for k in (segment, cluster) if k]
    table = aggregate(path, arm, metrics, keys)
    counts = table.groupby(level=arm, observed=True)["n"].sum().astype(int)
    if control not in counts.index:
        raise FlatFileError(f"column {arm!r}: the control value {control!r} does not occur "
                            f"(values: {', '.join(map(str, counts.index))})")
    arms = [a for a in counts.index if a != control]
    if not arms:
        raise FlatFileError(f"column {arm!r}: only the control arm {control!r} has rows")
    report: dict[str, Any] = {"arms": {a: {"n": int(counts[a])} for a in [control, *arms]},
                              "srm": _srm(counts, control, arms, parse_weights(weights), arm)}
    config = InferenceConfig(alpha)
    report["results"] = _results(table, arm, control, arms, metrics, cluster, config, seq)
    if segment:
        report["segments"] = _segments(table, arm, control, arms, metrics, segment, config, seq)
    return clean(report)


def _with_covariates(metrics: list[Metric], covariates: list[str]) -> list[Metric]:
    by_name = {m.name: m for m in metrics}
    for spec in covariates:
        name, _, column = spec.partition("=")
        if name not in by_name or not column:
            raise FlatFileError(f"--covariate {spec!r}: expected METRIC=COLUMN for a metric given with --metric")
        if by_name[name].kind == "ratio":
            raise FlatFileError(f"--covariate {spec!r}: CUPED applies to mean and proportion metrics, not ratios")
        by_name[name] = Metric(name, by_name[name].kind, by_name[name].columns, column.strip())
    return list(by_name.values())


def _srm(counts: pd.Series, control: str, arms: list[str], weights: dict[str, float] | None,
         arm: str) -> dict[str, Any]:
    order = [control, *arms]
    if weights is None:
        weights = {a: 1.0 for a in order}
    unknown = [a for a in weights if a not in counts.index]
    if unknown:
        raise FlatFileError(f"column {arm!r}: arm(s) {', '.join(unknown)} in --weights have no rows")
    unweighted = [a for a in order if a not in weights]
    if unweighted:
        raise FlatFileError(f"--weights: no weight for arm(s) {', '.join(unweighted)}")
    res = srm_test([int(counts[a]) for a in order], [weights[a] for a in order])
    return {"statistic": res.statistic, "p_value": res.p_value, "mismatch": res.mismatch}


def _segments(table: pd.DataFrame, arm: str, control: str, arms: list[str], metrics: list[Metric], segment: str,
              config: InferenceConfig, seq: bool) -> dict[str, Any]:
    rows = []
    for value, part in table.groupby(level=segment, observed=True):
        present = set(part.index.get_level_values(arm))
        if control not in present:
            continue
        for r in _results(part, arm, control, [a for a in arms if a in present], metrics, None, config, seq):
            rows.append({"segment": value, **r})
    het = []
    for a in arms:
        for m in metrics:
            for method in {r["method"] for r in rows if r["arm"] == a and r["metric"] == m.name}:
                rs = [r for r in rows if (r["arm"], r["metric"], r["method"]) == (a, m.name, method)]
                q = cochran_q([r["effect_abs"] for r in rs], [r["se"] for r in rs])
                het.append({"arm": a, "metric": m.name, "method": method, "q": q.q, "df": q.df,
                            "p_value": q.p_value, "i_squared": q.i_squared})
    return {"results": rows, "heterogeneity": het}


def render_table(report: dict[str, Any]) -> str:
    """The report as aligned text tables."""
    lines = ["arms: " + ", ".join(f"{a} n={v['n']}" for a, v in report["arms"].items()),
             f"sample-ratio check: chi2={_fmt(report['srm']['statistic'])} p={_fmt(report['srm']['p_value'])}"
             + ("  ** MISMATCH: results not to be trusted **" if report["srm"]["mismatch"] else ""), ""]
    lines += _table(report["results"])
    lines += few_clusters_warnings(report["results"])
    if "segments" in report:
        lines += ["", "by segment:"] + _table(report["segments"]["results"], first=("segment",))
        lines += ["", "heterogeneity across segments (Cochran's Q):"]
        lines += _table(report["segments"]["heterogeneity"], cols=("arm", "metric", "method", "q", "df", "p_value"))
    return "\n".join(lines)


def few_clusters_warnings(rows: list[dict[str, Any]]) -> list[str]:
    """A warning line per cluster-robust row computed from fewer than FEW_CLUSTERS clusters."""
    return [f"** WARNING: {r['arm']} / {r['metric']}: cluster-robust errors from fewer than {FEW_CLUSTERS} "
            f"clusters (CR2, {_fmt(r.get('df'))} Bell-McCaffrey df): few independent units, read with care **"
            for r in rows if r.get("message") == "few_clusters"]


def _table(rows: list[dict[str, Any]], first: tuple[str, ...] = (), cols: tuple[str, ...] | None = None) -> list[str]:
    cols = cols or (*first, "arm", "metric", "method", "n_control", "n_treatment", "mean_control",
                    "mean_treatment", "effect_abs", "ci_low", "ci_high", "effect_rel", "ci_rel", "p_value",
                    "p_value_holm", *(("seq_p_value",) if rows and "seq_p_value" in rows[0] else ()))
    cells = [list(cols)] + [[_cell(r, c) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    return ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]


def _cell(row: dict[str, Any], col: str) -> str:
    """A table cell: the relative effect and its CI (`ci_rel`) as percentages, other values by _fmt."""
    if col == "effect_rel":
        return _pct(row.get("effect_rel"))
    if col == "ci_rel":
        return f"[{_pct(row.get('ci_rel_low'))}, {_pct(row.get('ci_rel_high'))}]"
    return _fmt(row.get(col))


def _pct(v: Any) -> str:
    return "-" if v is None else f"{v:+.1%}"


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.6g}"
    return str(v)
