"""From a stage's sufficient statistics to result tables and one recommendation.

`compute` turns a Cube (pilot.aggregates) into plain, JSON-ready tables using the experiments
library only; `recommend` reads those tables against the stage gate and says advance, extend,
adjust, stop or investigate, each with its reasons in numbers.
"""
from __future__ import annotations

import math
from dataclasses import asdict
from datetime import datetime
from typing import Any

from experiments.cluster import ancova, cluster_robust_by_period, difference_in_differences
from experiments.cuped import cuped
from experiments.economics import economics
from experiments.heterogeneity import cochran_q
from experiments.means import welch
from experiments.multiple import benjamini_hochberg, holm
from experiments.novelty import effect_trend
from experiments.power import mde_means, mde_proportion, sample_size_means, sample_size_proportions
from experiments.proportions import two_proportion_z
from experiments.ratio import ratio_cuped, ratio_delta
from experiments.results import EffectResult, InferenceConfig, degenerate
from experiments.sequential import sequential
from experiments.srm import srm_test
from experiments.statistics import (AdjustedRatioStatistic, ClusterSumStatistic, RatioStatistic, RegressionAdjustedStatistic,
                                    SampleMeanStatistic)
from experiments.stratified import post_stratified
from pilot.aggregates import Cube, product_key
from pilot.metrics import CATALOGUE

# metric -> (per-unit value, covariate) for means and proportions; (numerator, denominator) for ratios
SOURCES = {"spend_per_customer": ("spend", "pre_spend"), "visits_per_customer": ("visits", "pre_visits"),
           "discount_cost_per_customer": ("cost", None), "conversion": ("converted", None),
           "retention": ("retained", None), "spend_per_visit": ("spend", "visits"),
           "items_per_basket": ("items", "visits")}
STORE_SOURCES = {"spend_per_customer": "spend", "visits_per_customer": "visits"}
SRM_ALPHA = 0.001
HETEROGENEITY_ALPHA = 0.01  # narrowing a programme to some groups is a big step: a stricter bar
DEFAULT_GATE = {"min_days": 14, "min_units_per_arm": 100, "require_significant": True, "min_roi": 0.0,
                "no_guardrail_harm": True, "no_srm": True}


def _clean(value: Any) -> Any:
    """NaN and infinity become None so the tables are valid JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _sq(sums: dict[str, float], a: str, b: str) -> float:
    return sums.get(product_key(a, b), sums.get(product_key(b, a), 0.0))


def metric_effect(metric: str, control: dict[str, float], treatment: dict[str, float],
                  config: InferenceConfig) -> tuple[EffectResult, dict[str, Any]]:
    """The effect of one metric between two arms' sums, by the metric's kind (CUPED where it can)."""
    kind = CATALOGUE[metric].kind
    value, other = SOURCES[metric]
    if kind == "ratio":
        def ratio(s: dict[str, float], num: str, den: str) -> RatioStatistic:
            return RatioStatistic(int(s.get("n", 0)), s.get(num, 0.0), _sq(s, num, num), s.get(den, 0.0),
                                  _sq(s, den, den), _sq(s, num, den))

        def adjusted_ratio(s: dict[str, float]) -> AdjustedRatioStatistic:
            pre_num, pre_den = f"pre_{value}", f"pre_{other}"
            return AdjustedRatioStatistic(ratio(s, value, other), ratio(s, pre_num, pre_den), _sq(s, value, pre_num),
                                          _sq(s, value, pre_den), _sq(s, other, pre_num), _sq(s, other, pre_den))
        if control.get(f"pre_{other}") and treatment.get(f"pre_{other}"):
            return ratio_cuped(adjusted_ratio(control), adjusted_ratio(treatment), config), {}
        return ratio_delta(ratio(control, value, other), ratio(treatment, value, other), config), {}
    if kind == "proportion":
        def prop(s: dict[str, float]) -> SampleMeanStatistic:
            return SampleMeanStatistic(int(s.get("n", 0)), s.get(value, 0.0), s.get(value, 0.0))
        return two_proportion_z(prop(control), prop(treatment), config), {}
    if other is not None:
        def adjusted(s: dict[str, float]) -> RegressionAdjustedStatistic:
            return RegressionAdjustedStatistic(int(s.get("n", 0)), s.get(value, 0.0), _sq(s, value, value),
                                               s.get(other, 0.0), _sq(s, other, other), _sq(s, value, other))
        result = cuped(adjusted(control), adjusted(treatment), config)
        if result.effect.ok:
            return result.effect, {"theta": result.theta, "variance_reduction": result.variance_reduction}

    def plain(s: dict[str, float]) -> SampleMeanStatistic:
        return SampleMeanStatistic(int(s.get("n", 0)), s.get(value, 0.0), _sq(s, value, value))
    return welch(plain(control), plain(treatment), config), {}


def _row(effect: EffectResult, **extra: Any) -> dict[str, Any]:
    data = asdict(effect)
    for internal in ("var_mean_control", "cov_effect_control"):  # what combinations of results need
        del data[internal]
    data.update(extra)
    return data


def _seq(effect: EffectResult, alpha: float, tuning: float) -> dict[str, Any]:
    n = effect.n_control + effect.n_treatment
    seq = sequential(effect.effect_abs, effect.se, n, alpha, tuning)
    rel = sequential(effect.effect_rel, effect.se_rel, n, alpha, tuning)  # the relative effect's own error
    return {"seq_ci_low": seq.ci_low, "seq_ci_high": seq.ci_high, "seq_p_value": seq.p_value,
            "seq_ci_rel_low": rel.ci_low, "seq_ci_rel_high": rel.ci_high}


def _good(metric: str, value: float) -> float:
    """The value turned so that positive is good (a cost going down is good)."""
    return value if CATALOGUE[metric].good_direction == "up" else -value


def compute(pilot_data: dict[str, Any], cube: Cube, days: float, tuning: float = 5000.0,
            projected_customers: int | None = None, daily_new_units: float | None = None,
            srm_shares: dict[str, float] | None = None) -> dict[str, Any]:
    """Every result table of one stage from its cube; pilot_data holds the configuration.
    `srm_shares`: the share of units each arm should hold when the stage's weights changed while it
    ran (see assigning.expected_shares); the sample-ratio check expects the current weights otherwise."""
    alpha, control = pilot_data["alpha"], pilot_data["control"]
    config = InferenceConfig(alpha=alpha)
    weights = pilot_data["allocation"]
    arms = [k for k, w in weights.items() if w > 0]
    treatments = [k for k in arms if k != control]
    primary = pilot_data["primary_metric"]
    guardrails = {g["metric"]: g.get("max_harm", 0.0) for g in pilot_data.get("guardrails", [])}
    metrics = [primary] + [m for m in guardrails if m != primary] + \
        [m for m in CATALOGUE if m != primary and m not in guardrails]
    if pilot_data["unit"] == "store":
        return _store_results(pilot_data, cube, days, arms, treatments, config)
    totals = {k: cube.arm(k) for k in arms}
    counts = [int(totals[k].get("n", 0)) for k in arms]
    periods = sorted({p for (_, p) in cube.by_period})

    def compared_periods(arm: str, groups: set[str] | None = None) -> list[tuple[dict, dict]]:
        """(control, arm) sums of each allocation period in which both arms have units to compare."""
        pairs = [(cube.arm_in_period(control, p, groups), cube.arm_in_period(arm, p, groups)) for p in periods]
        return [(c, t) for c, t in pairs if c.get("n", 0) >= 2 and t.get("n", 0) >= 2]

    def effect_of(metric: str, arm: str, groups: set[str] | None = None) -> tuple[EffectResult, dict[str, Any]]:
        """Arm against control (in some customer groups); post-stratified by allocation period when
        the weights changed in the stage (experiments.stratified), so that arms whose units joined at
        different times in different proportions are compared period by period."""
        if len(periods) < 2:
            if groups is None:
                return metric_effect(metric, totals[control], totals[arm], config)
            return metric_effect(metric, cube.arm(control, groups), cube.arm(arm, groups), config)
        strata = [metric_effect(metric, c, t, config)[0] for c, t in compared_periods(arm, groups)]
        if not strata:
            n = (int(cube.arm(control, groups).get("n", 0)), int(cube.arm(arm, groups).get("n", 0)))
            return degenerate("post_stratified", n, (math.nan, math.nan), "too_few_units"), {}
        return post_stratified(strata, config), {"strata": len(strata)}

    def cost_gap(arm: str) -> float:
        """Programme cost per customer, arm minus control (by period, weighted as effect_of does)."""
        def gap(c: dict[str, float], t: dict[str, float]) -> float:
            return t.get("cost", 0.0) / max(t.get("n", 0), 1) - c.get("cost", 0.0) / max(c.get("n", 0), 1)
        if len(periods) < 2:
            return gap(totals[control], totals[arm])
        parts = compared_periods(arm)
        units = sum(c["n"] + t["n"] for c, t in parts)
        return sum((c["n"] + t["n"]) / units * gap(c, t) for c, t in parts) if units else math.nan

    expected = srm_shares or weights
    srm = srm_test(counts, [expected[k] for k in arms], threshold=SRM_ALPHA)
    rows = []
    for arm in treatments:
        for metric in metrics:
            effect, extra = effect_of(metric, arm)
            role = "primary" if metric == primary else "guardrail" if metric in guardrails else "secondary"
            rows.append(_row(effect, arm=arm, metric=metric, kind=CATALOGUE[metric].kind, role=role,
                             good_direction=CATALOGUE[metric].good_direction, **extra, **_seq(effect, alpha, tuning)))
    tested = [r for r in rows if r["role"] in ("primary", "guardrail")]
    for r, p in zip(tested, holm([r["p_value"] if r["p_value"] == r["p_value"] else 1.0 for r in tested])):
        r["p_holm"] = p
    for r in rows:
        r.setdefault("p_holm", None)
        if r["metric"] in guardrails:
            harm = -_good(r["metric"], r["effect_rel"])
            worst = -_good(r["metric"], r["ci_rel_low"] if CATALOGUE[r["metric"]].good_direction == "up"
                           else r["ci_rel_high"])
            seq_bad = _good(r["metric"], r["seq_ci_rel_high"] if CATALOGUE[r["metric"]].good_direction == "up"
                            else r["seq_ci_rel_low"])
            r["max_harm"] = guardrails[r["metric"]]
            r["harmed"] = bool(r["p_value"] == r["p_value"] and r["p_value"] < alpha and harm > guardrails[r["metric"]])
            r["harmed_sequential"] = bool(seq_bad == seq_bad and seq_bad < -guardrails[r["metric"]])
            r["worst_harm"] = worst
    groups_keys = sorted({g for (_, g) in cube.by_group})
    group_rows, heterogeneity = [], {}
    for arm in treatments:
        per = []
        for g in groups_keys:
            effect, _ = effect_of(primary, arm, {g})
            per.append(_row(effect, arm=arm, group=g, metric=primary))
        valid = [r for r in per if r["p_value"] == r["p_value"]]
        for r, p in zip(valid, benjamini_hochberg([r["p_value"] for r in valid])):
            r["p_bh"] = p
        for r in per:
            r.setdefault("p_bh", None)
        group_rows += per
        # on the relative scale: a uniform lift is the same share in groups that spend differently
        usable = [r for r in valid if r["se_rel"] == r["se_rel"] and r["se_rel"] > 0]
        heterogeneity[arm] = {**asdict(cochran_q([r["effect_rel"] for r in usable], [r["se_rel"] for r in usable])),
                              "scale": "relative"}
    week_rows, trends = _weeks(cube, control, treatments, primary, config, alpha)
    econ = {}
    cost_metric = "discount_cost_per_customer"
    for arm in treatments:
        spend, _ = effect_of("spend_per_customer", arm)
        share = weights[arm] / sum(weights[k] for k in arms)
        projected = int(projected_customers * share) if projected_customers is not None else None
        e = economics(spend.effect_abs, (spend.ci_low, spend.ci_high), spend.mean_treatment, cost_gap(arm),
                      pilot_data["margin_rate"], projected)
        econ[arm] = {**asdict(e), "cost_metric": cost_metric, "mechanic": pilot_data["mechanics"].get(arm)}
    cluster = {}
    value = SOURCES[primary][0] if CATALOGUE[primary].kind != "ratio" else "spend"

    def store_sums(v: str, s: int, p: int) -> ClusterSumStatistic:
        c = cube.store_cells.get((v, s, p), {})
        return ClusterSumStatistic(int(c.get("n", 0)), c.get(value, 0.0))
    for arm in treatments:
        # by store × allocation period: after a weight change, post-stratified like the main effects
        cells = {(s, p) for (v, s, p) in cube.store_cells if v in (control, arm)}
        cluster[arm] = _row(cluster_robust_by_period({(s, p): (store_sums(control, s, p), store_sums(arm, s, p))
                                                      for s, p in cells}, config))
    reductions = {r["arm"]: r.get("variance_reduction") for r in rows if r["metric"] == primary}
    power = _power(pilot_data, totals, control, treatments, primary, days, daily_new_units, reductions)
    return _clean({"unit": "customer", "arms": [{"variant": k, "weight": weights[k], "n": int(totals[k].get("n", 0)),
                                                 "role": "control" if k == control else "treatment",
                                                 "mechanic": pilot_data["mechanics"].get(k)} for k in arms],
                   "allocation_periods": {"post_stratified": len(periods) > 1, "units": {
                       str(p): {k: int(cube.by_period.get((k, p), {}).get("n", 0)) for k in arms} for p in periods}},
                   "srm": {**asdict(srm), "observed": counts, "variants": arms,
                           "shares": {k: expected[k] for k in arms}, "weights_changed": srm_shares is not None},
                   "metrics": rows, "groups": group_rows, "heterogeneity": heterogeneity, "weeks": week_rows,
                   "trend": trends, "economics": econ, "cluster_robust": cluster, "power": power, "days": days})


def weekly_value(primary: str) -> str:
    """The per-unit value the week-by-week table follows: visits for a visits metric, else spend."""
    return "visits" if SOURCES.get(primary, ("spend",))[0] == "visits" else "spend"


def _weeks(cube: Cube, control: str, treatments: list[str], primary: str, config: InferenceConfig, alpha: float):
    value = weekly_value(primary)
    weeks = sorted({w for (_, w) in cube.by_week})
    periods = sorted({p for (_, p) in cube.by_period})
    rows, trends = [], {}

    def stat(arm: str, w: int, period: int | None = None) -> SampleMeanStatistic:
        """The arm's units exposed the whole week w (of one allocation period, or all)."""
        n = sum(c for (v, f, p), c in cube.full_week_cells.items()
                if v == arm and f >= w + 1 and period in (None, p))
        s = cube.by_week.get((arm, w), {}) if period is None else cube.week_cells.get((arm, w, period), {})
        return SampleMeanStatistic(n, s.get(value, 0.0), s.get(f"{value}*{value}", 0.0))

    def effect(arm: str, w: int) -> EffectResult:
        """Welch per week; after a weight change, per allocation period and post-stratified."""
        if len(periods) < 2:
            return welch(stat(control, w), stat(arm, w), config)
        strata = [welch(c, t, config) for c, t in ((stat(control, w, p), stat(arm, w, p)) for p in periods)
                  if c.n >= 2 and t.n >= 2]
        return post_stratified(strata, config)
    for arm in treatments:
        per = []
        for w in weeks:
            effect_w = effect(arm, w)
            per.append(_row(effect_w, arm=arm, week=w + 1, metric=f"{value}_per_customer_week"))
        rows += per
        ok = [r for r in per if r["se"] == r["se"] and r["se"] > 0]
        trends[arm] = asdict(effect_trend([r["week"] for r in ok], [r["effect_abs"] for r in ok],
                                          [r["se"] for r in ok], alpha))
    return rows, trends


def _power(pilot_data: dict, totals: dict, control: str, treatments: list[str], primary: str, days: float,
           daily_new_units: float | None, reductions: dict[str, float | None] | None = None) -> dict[str, Any]:
    """The effect detectable now and the units still needed for the target MDE, per arm. A mean
    metric tested with CUPED is planned with the standard deviation CUPED leaves (sd·√(1 − variance
    reduction) of that arm's comparison): the test that will be run, not the unadjusted one."""
    out = {}
    kind = CATALOGUE[primary].kind
    c = totals[control]
    n_c = c.get("n", 0)
    alpha, power, target = pilot_data["alpha"], pilot_data["power"], pilot_data["mde"]
    value = SOURCES[primary][0]
    for arm in treatments:
        n_t = totals[arm].get("n", 0)
        if n_c < 3 or n_t < 3:
            out[arm] = {"mde_rel_now": None, "target_mde_rel": target, "units_needed": None, "message": "too_few_units"}
            continue
        reduction = None
        if kind == "proportion":
            p = c.get(value, 0.0) / n_c
            mde_abs = mde_proportion(p, n_c, n_t, power, alpha) if 0 < p < 1 else math.inf
            base = p
            need = sample_size_proportions(p, min(p * (1 + target), 0.999), power, alpha, n_t / n_c).n_total \
                if 0 < p < 1 else None
        else:
            num = value if kind == "mean" else "spend"
            mean = c.get(num, 0.0) / n_c
            sd = math.sqrt(max(_sq(c, num, num) / n_c - mean**2, 0) * n_c / (n_c - 1))
            reduction = (reductions or {}).get(arm) if kind == "mean" else None
            if reduction is not None and 0 < reduction < 1:
                sd *= math.sqrt(1 - reduction)
            mde_abs = mde_means(sd, n_c, n_t, power, alpha) if sd > 0 else math.inf
            base = mean
            need = sample_size_means(target * mean, sd, power, alpha, n_t / n_c).n_total if sd > 0 and mean else None
        have = n_c + n_t
        more = max(0, need - have) if need is not None else None
        days_needed = (more / daily_new_units if daily_new_units and more is not None else None)
        out[arm] = {"mde_rel_now": mde_abs / abs(base) if base else None, "mde_abs_now": mde_abs,
                    "target_mde_rel": target, "units_now": int(have), "units_needed": need,
                    "more_units_needed": more, "days_needed": days_needed,
                    "variance_reduction": reduction,
                    "powered": bool(need is not None and have >= need)}
    return out


def _store_results(pilot_data: dict, cube: Cube, days: float, arms: list[str], treatments: list[str],
                   config: InferenceConfig) -> dict[str, Any]:
    control = pilot_data["control"]
    counts = [sum(1 for (a, _) in cube.stores if a == k) for k in arms]
    srm = srm_test(counts, [pilot_data["allocation"][k] for k in arms], threshold=SRM_ALPHA)
    rows = []
    for arm in treatments:
        for metric, value in STORE_SOURCES.items():
            def stat(k: str) -> RegressionAdjustedStatistic:
                vals = [s for (a, _), s in cube.stores.items() if a == k]
                y = [s[value] for s in vals]
                x = [s[f"pre_{value}"] for s in vals]
                return RegressionAdjustedStatistic(len(vals), sum(y), sum(v * v for v in y), sum(x),
                                                   sum(v * v for v in x), sum(a * b for a, b in zip(y, x)))
            for method in (difference_in_differences, ancova):
                effect = method(stat(control), stat(arm), config)
                rows.append(_row(effect, arm=arm, metric=metric, kind="mean", role="primary" if metric ==
                                 pilot_data["primary_metric"] else "secondary",
                                 good_direction="up", **_seq(effect, config.alpha, 5000.0)))
    for r, p in zip(rows, holm([r["p_value"] if r["p_value"] == r["p_value"] else 1.0 for r in rows])):
        r["p_holm"] = p
    stores = [{"arm": a, "store_id": s, **v} for (a, s), v in sorted(cube.stores.items())]
    return _clean({"unit": "store", "arms": [{"variant": k, "weight": pilot_data["allocation"][k], "n": c,
                                              "role": "control" if k == control else "treatment",
                                              "mechanic": pilot_data["mechanics"].get(k)} for k, c in zip(arms, counts)],
                   "srm": {**asdict(srm), "observed": counts, "variants": arms}, "metrics": rows, "stores": stores,
                   "groups": [], "heterogeneity": {}, "weeks": [], "trend": {}, "economics": {}, "power": {},
                   "days": days})


# -- the decision -------------------------------------------------------------------------------

def _primary(results: dict, arm: str) -> dict | None:
    return next((r for r in results["metrics"] if r["arm"] == arm and r["role"] == "primary"
                 and r.get("method") != "ancova"), None)


def _significant(r: dict | None, alpha: float) -> bool:
    p = None if r is None else (r.get("p_holm") if r.get("p_holm") is not None else r.get("p_value"))
    return p is not None and p < alpha


def recommend(pilot_data: dict, results: dict, quality: dict) -> dict[str, Any]:
    """One decision for the stage with reasons in numbers and the concrete action it suggests."""
    alpha = pilot_data["alpha"]
    gate = {**DEFAULT_GATE, **(pilot_data.get("gate") or {})}
    treatments = [a["variant"] for a in results["arms"] if a["role"] == "treatment"]
    reasons: list[dict[str, Any]] = []

    def decide(decision: str, arm: str | None, action: dict | None = None) -> dict[str, Any]:
        return {"decision": decision, "arm": arm, "reasons": reasons, "action": action}

    srm = results["srm"]
    if srm.get("p_value") is not None and srm["p_value"] < SRM_ALPHA:
        reasons.append({"code": "sample_ratio_mismatch", "p_value": srm["p_value"], "observed": srm["observed"],
                        "expected": srm["expected"],
                        "message": f"Arm sizes {srm['observed']} differ from the planned weights "
                                   f"(χ² p = {srm['p_value']:.2g}): assignment or data is broken; "
                                   "results are not to be trusted."})
    for problem in quality.get("problems", []):
        reasons.append({"code": "data_quality", **problem})
    if reasons:
        return decide("investigate", None, {"type": "pause"})

    def score(arm: str) -> float:
        r = _primary(results, arm)
        return -math.inf if r is None or r["effect_rel"] is None else _good(pilot_data["primary_metric"], r["effect_rel"])
    best = max(treatments, key=score) if treatments else None
    harmed = [r for r in results["metrics"] if r.get("harmed") and r["arm"] == best]
    if harmed and gate["no_guardrail_harm"]:
        for r in harmed:
            reasons.append({"code": "guardrail_harmed", "arm": r["arm"], "metric": r["metric"],
                            "effect_rel": r["effect_rel"], "ci_rel": [r["ci_rel_low"], r["ci_rel_high"]],
                            "max_harm": r["max_harm"], "p_value": r["p_value"],
                            "message": f"{r['metric']} moved {r['effect_rel']:+.1%} in {r['arm']} "
                                       f"(CI {r['ci_rel_low']:+.1%} to {r['ci_rel_high']:+.1%}); at most "
                                       f"{r['max_harm']:.1%} harm is tolerated."})
        return decide("stop", best, {"type": "rollback"})

    days, n_min = results.get("days", 0.0), min((a["n"] for a in results["arms"]), default=0)
    if results["unit"] == "customer" and best is not None:
        adjust = _adjustments(pilot_data, results, best, alpha, gate, reasons)
        if adjust is not None:
            return decide("adjust", best, adjust)
    primary = _primary(results, best) if best else None
    mde = pilot_data["mde"]
    enough_time = days >= gate["min_days"]
    enough_units = n_min >= gate["min_units_per_arm"]
    if primary is not None and primary["ci_rel_high"] is not None and enough_time and enough_units \
            and _good(pilot_data["primary_metric"], primary["ci_rel_high"]
                      if CATALOGUE[pilot_data["primary_metric"]].good_direction == "up" else primary["ci_rel_low"]) < mde \
            and not _significant(primary, alpha):
        reasons.append({"code": "effect_below_mde", "arm": best, "effect_rel": primary["effect_rel"],
                        "ci_rel": [primary["ci_rel_low"], primary["ci_rel_high"]], "mde": mde,
                        "message": f"The best arm ({best}) moves {pilot_data['primary_metric']} by "
                                   f"{primary['effect_rel']:+.1%}, and at most {primary['ci_rel_high']:+.1%}: "
                                   f"clearly below the {mde:.1%} the pilot set out to find."})
        return decide("stop", best, {"type": "rollback"})
    significant = primary is not None and _significant(primary, alpha) and \
        _good(pilot_data["primary_metric"], primary["effect_abs"]) > 0
    econ = results["economics"].get(best, {}) if best else {}
    roi = econ.get("roi")
    gate_checks = {"min_days": enough_time, "min_units_per_arm": enough_units,
                   "significant": significant or not gate["require_significant"],
                   "roi": roi is None or roi >= gate["min_roi"] or results["unit"] == "store"}
    if all(gate_checks.values()):
        reasons.append({"code": "gate_met", "arm": best, "effect_rel": primary["effect_rel"],
                        "ci_rel": [primary["ci_rel_low"], primary["ci_rel_high"]], "p_value": primary["p_value"],
                        "roi": roi, "days": days, "units_per_arm": n_min,
                        "projected_net_profit": econ.get("projected_net_profit"),
                        "projected_incremental_revenue": econ.get("projected_incremental_revenue"),
                        "message": f"{best} lifts {pilot_data['primary_metric']} by {primary['effect_rel']:+.1%} "
                                   f"(CI {primary['ci_rel_low']:+.1%} to {primary['ci_rel_high']:+.1%}, p = "
                                   f"{primary['p_value']:.2g})" + (f", ROI {roi:.0%}" if roi is not None else "")
                                   + (f"; projected net profit at the next stage: {econ['projected_net_profit']:,.0f}"
                                      if econ.get("projected_net_profit") is not None else "") + "."})
        return decide("advance", best, {"type": "advance"})
    power = results["power"].get(best, {}) if best else {}
    missing = [k for k, ok in gate_checks.items() if not ok]
    reasons.append({"code": "underpowered", "arm": best, "gate_unmet": missing, "days": days,
                    "min_days": gate["min_days"], "units_per_arm": n_min, "min_units_per_arm": gate["min_units_per_arm"],
                    "mde_rel_now": power.get("mde_rel_now"), "more_units_needed": power.get("more_units_needed"),
                    "days_needed": power.get("days_needed"),
                    "message": _extend_message(gate, days, n_min, power, missing)})
    extra_days = max(gate["min_days"] - days, 0) if not enough_time else power.get("days_needed") or 7
    return decide("extend", best, {"type": "extend", "days": math.ceil(extra_days),
                                   "more_units": power.get("more_units_needed")})


def _extend_message(gate: dict, days: float, n_min: int, power: dict, missing: list[str]) -> str:
    parts = []
    if "min_days" in missing:
        parts.append(f"{days:.0f} of {gate['min_days']} days run")
    if "min_units_per_arm" in missing:
        parts.append(f"{n_min} of {gate['min_units_per_arm']} units in the smallest arm")
    if power.get("mde_rel_now") is not None:
        parts.append(f"the effect detectable now is {power['mde_rel_now']:.1%}")
    if power.get("more_units_needed"):
        parts.append(f"about {int(power['more_units_needed']):,} more units are needed for the target MDE")
    if "roi" in missing:
        parts.append("ROI is below the bar but not yet certain")
    return "Not enough evidence yet: " + "; ".join(parts) + "."


def _adjustments(pilot_data: dict, results: dict, best: str, alpha: float, gate: dict,
                 reasons: list) -> dict | None:
    metric = pilot_data["primary_metric"]
    groups = [g for g in results["groups"] if g["arm"] == best and g["n_control"] and g["n_treatment"]]
    het = results["heterogeneity"].get(best, {})
    works = [g for g in groups if g.get("p_bh") is not None and g["p_bh"] < alpha and _good(metric, g["effect_abs"]) > 0]
    fails = [g for g in groups if g not in works]
    if het.get("p_value") is not None and het["p_value"] < HETEROGENEITY_ALPHA and works and fails:
        keep = [g["group"] for g in works]
        good = ", ".join(f"{g['group']} {_pct(g['effect_rel'])}" for g in works)
        bad = ", ".join(f"{g['group']} {_pct(g['effect_rel'])}" for g in fails)
        reasons.append({"code": "works_in_some_groups", "arm": best, "q": het["q"], "p_value": het["p_value"],
                        "groups": {g["group"]: {"effect_rel": g["effect_rel"], "p_bh": g["p_bh"]} for g in groups},
                        "message": f"{best} works for {good} but not for {bad} (Cochran's Q p = "
                                   f"{het['p_value']:.2g}). Target {', '.join(keep)}."})
        return {"type": "narrow_groups", "groups": keep}
    treatments = [a["variant"] for a in results["arms"] if a["role"] == "treatment"]
    for arm in treatments:
        r = _primary(results, arm)
        if arm != best and r is not None and _significant(r, alpha) and _good(metric, r["effect_abs"]) < 0:
            reasons.append({"code": "arm_clearly_worse", "arm": arm, "effect_rel": r["effect_rel"],
                            "p_holm": r["p_holm"], "message": f"{arm} lowers {metric} by {r['effect_rel']:+.1%} "
                                                              f"(Holm p = {r['p_holm']:.2g}): drop it."})
            return {"type": "drop_arm", "arm": arm}
    trend = results["trend"].get(best, {})
    primary = _primary(results, best)
    if trend.get("fading") and primary is not None and _good(metric, primary["effect_abs"]) > 0:
        reasons.append({"code": "effect_fading", "arm": best, "slope_per_week": trend["slope"],
                        "p_value": trend["p_value"],
                        "message": f"The effect of {best} shrinks by {abs(trend['slope']):.2f} per customer each week "
                                   f"(p = {trend['p_value']:.2g}): a novelty effect. Make the reward dynamic "
                                   "(rotating offers, rising tiers) to keep it."})
        return {"type": "make_dynamic", "arm": best}
    econ = results["economics"].get(best, {})
    if primary is not None and _significant(primary, alpha) and _good(metric, primary["effect_abs"]) > 0 \
            and econ.get("roi") is not None and econ["roi"] < gate["min_roi"]:
        rate = econ["break_even_discount_rate"]
        reasons.append({"code": "uplift_but_unprofitable", "arm": best, "effect_rel": primary["effect_rel"],
                        "roi": econ["roi"], "net_profit_per_customer": econ["net_profit_per_customer"],
                        "break_even_discount_rate": rate,
                        "message": f"{best} lifts {metric} by {primary['effect_rel']:+.1%} but loses "
                                   f"{-econ['net_profit_per_customer']:.2f} per customer (ROI {econ['roi']:.0%}). "
                                   f"At a discount of {rate:.1%} or less the same uplift would pay for itself."})
        return {"type": "reprice", "arm": best, "break_even_discount_rate": rate}
    return None


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1%}"


def now_days(start: datetime, cutoff: datetime) -> float:
    return max((cutoff - start).total_seconds() / 86400, 0.0)
