"""The effect tables of one stage: from its sufficient statistics to plain, JSON-ready results.

`compute` turns a Cube (pilot.aggregation) into every table a run stores — the metrics, the
customer groups, the weeks (pilot.weekly_effects), economics, cluster-robust errors and power
(pilot.planning) — using the experiments library only. A store-randomised stage has its own
tables (pilot.store_effects). The decision that reads these tables is pilot.recommendation.
"""
from __future__ import annotations

import math
from dataclasses import asdict, replace
from datetime import datetime
from typing import Any

from experiments.cluster import cluster_robust_by_period
from experiments.cuped import cuped
from experiments.economics import economics, group_economics
from experiments.heterogeneity import cochran_q
from experiments.means import welch
from experiments.multiple import benjamini_hochberg
from experiments.proportions import two_proportion_z
from experiments.ratio import ratio_cuped, ratio_delta
from experiments.results import EffectResult, InferenceConfig, degenerate
from experiments.srm import srm_test
from experiments.statistics import (
    AdjustedRatioStatistic,
    ClusterSumStatistic,
    RatioStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
)
from experiments.stratified import post_stratified
from pilot.aggregation import Cube, product_sum
from pilot.analysis_config import SRM_ALPHA, AnalysisConfig
from pilot.metric_columns import CATALOGUE_INFO, MetricInfo
from pilot.planning import Pool, power_table
from pilot.result_rows import adjust_p_values, arm_rows, clean, effect_row, sequential_columns
from pilot.store_effects import store_results
from pilot.weekly_effects import weekly_effects

Sums = dict[str, float]


def now_days(start: datetime, cutoff: datetime) -> float:
    """Days from the stage's start to the cut-off (0 before the start)."""
    return max((cutoff - start).total_seconds() / 86400, 0.0)


def good(metric: str, value: float) -> float:
    """The value of a catalogue metric turned so that positive is good (a cost going down is good);
    a run's defined metrics: AnalysisConfig.good."""
    return value if CATALOGUE_INFO[metric].good_direction == "up" else -value


def against_magnitude(effect: EffectResult) -> EffectResult:
    """The relative effect against the control's magnitude: a metric whose control mean is negative
    (an NPS below zero) keeps the sign of its absolute effect (+10 points on −20 is +50%, not −50%)."""
    if not effect.mean_control < 0:
        return effect
    return replace(effect, effect_rel=-effect.effect_rel, ci_rel_low=-effect.ci_rel_high,
                   ci_rel_high=-effect.ci_rel_low)


def metric_effect(metric: str, control: Sums, treatment: Sums, config: InferenceConfig,
                  info: MetricInfo | None = None) -> tuple[EffectResult, dict[str, Any]]:
    """The effect of one metric between two arms' sums, by the metric's test (CUPED where it can);
    `info`: how the metric is read (default: the catalogue's)."""
    effect, extra = _metric_effect(control, treatment, config, info or CATALOGUE_INFO[metric])
    return against_magnitude(effect), extra


def _metric_effect(control: Sums, treatment: Sums, config: InferenceConfig,
                   info: MetricInfo) -> tuple[EffectResult, dict[str, Any]]:
    kind, value, other = info.test, info.value, info.other
    if kind == "ratio":
        def ratio(s: Sums, num: str, den: str) -> RatioStatistic:
            return RatioStatistic(int(s.get("n", 0)), s.get(num, 0.0), product_sum(s, num, num), s.get(den, 0.0),
                                  product_sum(s, den, den), product_sum(s, num, den))

        def adjusted_ratio(s: Sums) -> AdjustedRatioStatistic:
            pre_num, pre_den = f"pre_{value}", f"pre_{other}"
            return AdjustedRatioStatistic(ratio(s, value, other), ratio(s, pre_num, pre_den),
                                          product_sum(s, value, pre_num), product_sum(s, value, pre_den),
                                          product_sum(s, other, pre_num), product_sum(s, other, pre_den))
        if control.get(f"pre_{other}") and treatment.get(f"pre_{other}"):
            return ratio_cuped(adjusted_ratio(control), adjusted_ratio(treatment), config), {}
        return ratio_delta(ratio(control, value, other), ratio(treatment, value, other), config), {}
    if kind == "proportion":
        def prop(s: Sums) -> SampleMeanStatistic:
            return SampleMeanStatistic(int(s.get("n", 0)), s.get(value, 0.0), s.get(value, 0.0))
        return two_proportion_z(prop(control), prop(treatment), config), {}
    if other is not None:
        def adjusted(s: Sums) -> RegressionAdjustedStatistic:
            return RegressionAdjustedStatistic(int(s.get("n", 0)), s.get(value, 0.0), product_sum(s, value, value),
                                               s.get(other, 0.0), product_sum(s, other, other),
                                               product_sum(s, value, other))
        result = cuped(adjusted(control), adjusted(treatment), config)
        if result.effect.ok:
            return result.effect, {"theta": result.theta, "variance_reduction": result.variance_reduction}

    def plain(s: Sums) -> SampleMeanStatistic:
        return SampleMeanStatistic(int(s.get("n", 0)), s.get(value, 0.0), product_sum(s, value, value))
    return welch(plain(control), plain(treatment), config), {}


class Comparison:
    """Each arm against the control in one stage's cube. After a weight change in the stage, arms
    are compared per allocation period and post-stratified (experiments.stratified), so that arms
    whose units joined at different times in different proportions are compared period by period."""

    def __init__(self, cube: Cube, config: AnalysisConfig) -> None:
        self.cube, self.control, self.inference = cube, config.control, config.inference
        self.infos = config.infos
        self.totals = {k: cube.arm(k) for k in config.arms}
        self.periods = sorted({p for (_, p) in cube.by_period})

    def pairs(self, arm: str, groups: set[str] | None = None) -> list[tuple[Sums, Sums]]:
        """(control, arm) sums of each allocation period in which both arms have units to compare."""
        pairs = [(self.cube.arm_in_period(self.control, p, groups), self.cube.arm_in_period(arm, p, groups))
                 for p in self.periods]
        return [(c, t) for c, t in pairs if c.get("n", 0) >= 2 and t.get("n", 0) >= 2]

    def effect(self, metric: str, arm: str, groups: set[str] | None = None) -> tuple[EffectResult, dict[str, Any]]:
        """The arm against control in one metric (in some customer groups)."""
        info = self.infos[metric]
        if len(self.periods) < 2:
            if groups is None:
                return metric_effect(metric, self.totals[self.control], self.totals[arm], self.inference, info)
            return metric_effect(metric, self.cube.arm(self.control, groups), self.cube.arm(arm, groups),
                                 self.inference, info)
        strata = [metric_effect(metric, c, t, self.inference, info)[0] for c, t in self.pairs(arm, groups)]
        if not strata:
            n = (int(self.cube.arm(self.control, groups).get("n", 0)), int(self.cube.arm(arm, groups).get("n", 0)))
            return degenerate("post_stratified", n, (math.nan, math.nan), "too_few_units"), {}
        return against_magnitude(post_stratified(strata, self.inference)), {"strata": len(strata)}

    def cost_gap(self, arm: str) -> float:
        """Programme cost per customer, arm minus control (by period, weighted as `effect` does)."""
        def gap(c: Sums, t: Sums) -> float:
            return t.get("cost", 0.0) / max(t.get("n", 0), 1) - c.get("cost", 0.0) / max(c.get("n", 0), 1)
        if len(self.periods) < 2:
            return gap(self.totals[self.control], self.totals[arm])
        parts = self.pairs(arm)
        units = sum(c["n"] + t["n"] for c, t in parts)
        return sum((c["n"] + t["n"]) / units * gap(c, t) for c, t in parts) if units else math.nan


def compute(config: AnalysisConfig, cube: Cube, days: float, projected_customers: int | None = None,
            daily_new_units: float | None = None, srm_shares: dict[str, float] | None = None,
            pool: Pool | None = None) -> dict[str, Any]:
    """Every result table of one stage from its cube.
    `srm_shares`: the share of units each arm should hold when the stage's weights changed while it
    ran (see assignment.expected_shares); the sample-ratio check expects the current weights otherwise."""
    if config.unit == "store":
        return store_results(config, cube, days)
    compare = Comparison(cube, config)
    arms, periods = config.arms, compare.periods
    counts = [int(compare.totals[k].get("n", 0)) for k in arms]
    expected = srm_shares or config.allocation
    srm = srm_test(counts, [expected[k] for k in arms], threshold=SRM_ALPHA)
    rows = _metric_rows(compare, config)
    group_rows, heterogeneity = _group_rows(compare, config, config.primary_metric)
    others = {m: _group_rows(compare, config, m) for m in config.metrics if m != config.primary_metric}
    week_rows, trends = weekly_effects(cube, config)
    reductions = {r["arm"]: r.get("variance_reduction") for r in rows if r["metric"] == config.primary_metric}
    return clean({"unit": "customer", "arms": arm_rows(config, counts),
                  "allocation_periods": {"post_stratified": len(periods) > 1, "units": {
                      str(p): {k: int(cube.by_period.get((k, p), {}).get("n", 0)) for k in arms} for p in periods}},
                  "srm": {**asdict(srm), "observed": counts, "variants": arms,
                          "shares": {k: expected[k] for k in arms}, "weights_changed": srm_shares is not None},
                  "metrics": rows, "groups": group_rows, "heterogeneity": heterogeneity, "weeks": week_rows,
                  "metric_groups": [r for per, _ in others.values() for r in per],
                  "metric_heterogeneity": [{"arm": a, "metric": m, **h} for m, (_, het) in others.items()
                                           for a, h in het.items()],
                  "trend": trends, "economics": _economics(compare, config, projected_customers),
                  "cluster_robust": _cluster_robust(cube, config),
                  "power": power_table(config, compare.totals, daily_new_units, reductions, pool), "days": days})


def _metric_rows(compare: Comparison, config: AnalysisConfig) -> list[dict[str, Any]]:
    """Each treatment arm in each catalogue metric; Holm over the primary and guardrail rows."""
    rows = []
    for arm in config.treatments:
        for metric in config.metrics:
            effect, extra = compare.effect(metric, arm)
            info = config.info(metric)
            labels = {"label": info.label, "version": info.version} if info.defined else {}
            rows.append(effect_row(effect, arm=arm, metric=metric, kind=info.kind, role=config.role(metric),
                                   good_direction=info.good_direction, **labels, **extra,
                                   **sequential_columns(effect, config.alpha, config.sequential_tuning)))
    adjust_p_values([r for r in rows if r["role"] in ("primary", "guardrail")], "p_holm", missing=1.0)
    for r in rows:
        r.setdefault("p_holm", None)
        if r["metric"] in config.guardrails:
            r.update(_harm(r, config.guardrails[r["metric"]], config.alpha))
    return rows


def _harm(r: dict[str, Any], max_harm: float, alpha: float) -> dict[str, Any]:
    """Whether a guardrail row shows more harm than tolerated (fixed-horizon and always-valid), by the
    row's good direction."""
    up = r["good_direction"] == "up"

    def turned(value: float) -> float:
        return value if up else -value
    harm = -turned(r["effect_rel"])
    seq_bad = turned(r["seq_ci_rel_high"] if up else r["seq_ci_rel_low"])
    return {"max_harm": max_harm,
            "harmed": bool(r["p_value"] == r["p_value"] and r["p_value"] < alpha and harm > max_harm),
            "harmed_sequential": bool(seq_bad == seq_bad and seq_bad < -max_harm),
            "worst_harm": -turned(r["ci_rel_low"] if up else r["ci_rel_high"])}


def _group_rows(compare: Comparison, config: AnalysisConfig,
                metric: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One metric in each customer group (Benjamini–Hochberg across the groups of each arm) and how
    much the groups differ (Cochran's Q). The primary metric's are `groups` and `heterogeneity`; every
    other metric's are `metric_groups` and `metric_heterogeneity`, for the report's drill-down."""
    keys = sorted({g for (_, g) in compare.cube.by_group})
    rows, heterogeneity = [], {}
    for arm in config.treatments:
        per = [effect_row(compare.effect(metric, arm, {g})[0], arm=arm, group=g, metric=metric) for g in keys]
        adjust_p_values(per, "p_bh", benjamini_hochberg)
        rows += per
        # on the relative scale: a uniform lift is the same share in groups that spend differently
        usable = [r for r in per if r["p_value"] == r["p_value"] and r["se_rel"] == r["se_rel"] and r["se_rel"] > 0]
        heterogeneity[arm] = {**asdict(cochran_q([r["effect_rel"] for r in usable], [r["se_rel"] for r in usable])),
                              "scale": "relative"}
    return rows, heterogeneity


def _economics(compare: Comparison, config: AnalysisConfig, projected_customers: int | None) -> dict[str, Any]:
    """Each arm's spend uplift against its programme cost, and projected to the next stage's customers."""
    out = {}
    for arm in config.treatments:
        spend, _ = compare.effect("spend_per_customer", arm)
        share = config.allocation[arm] / sum(config.allocation[k] for k in config.arms)
        projected = int(projected_customers * share) if projected_customers is not None else None
        e = economics(spend.effect_abs, (spend.ci_low, spend.ci_high), spend.mean_treatment, compare.cost_gap(arm),
                      config.margin_rate, projected)
        out[arm] = {**asdict(e), "cost_metric": "discount_cost_per_customer", "mechanic": config.mechanics.get(arm),
                    "groups": _group_economics(compare, config, arm)}
    return out


def _group_economics(compare: Comparison, config: AnalysisConfig, arm: str) -> list[dict[str, Any]]:
    """Per customer group: does a participant out-earn the group's ordinary (control) customer?"""
    out = []
    for g in sorted({g for (_, g) in compare.cube.by_group}):
        c, t = compare.cube.arm(config.control, {g}), compare.cube.arm(arm, {g})
        if c.get("n", 0) < 2 or t.get("n", 0) < 2:
            continue
        spend, _ = compare.effect("spend_per_customer", arm, {g})
        per = [(s.get("spend", 0.0) / s["n"], s.get("cost", 0.0) / s["n"]) for s in (c, t)]
        out.append(asdict(group_economics(g, (int(c["n"]), int(t["n"])), (per[0][0], per[1][0]), spend.effect_abs,
                                          (spend.ci_low, spend.ci_high), (per[0][1], per[1][1]), config.margin_rate)))
    return out


def _cluster_robust(cube: Cube, config: AnalysisConfig) -> dict[str, Any]:
    """The primary's value (spend for a ratio) with errors clustered by store, by store × allocation
    period: after a weight change, post-stratified like the main effects."""
    primary = config.info(config.primary_metric)
    value = primary.value if primary.test != "ratio" else "spend"

    def sums(v: str, s: int, p: int) -> ClusterSumStatistic:
        c = cube.store_cells.get((v, s, p), {})
        return ClusterSumStatistic(int(c.get("n", 0)), c.get(value, 0.0))
    out = {}
    for arm in config.treatments:
        cells = {(s, p) for (v, s, p) in cube.store_cells if v in (config.control, arm)}
        out[arm] = effect_row(cluster_robust_by_period({(s, p): (sums(config.control, s, p), sums(arm, s, p))
                                                        for s, p in cells}, config.inference))
    return out
