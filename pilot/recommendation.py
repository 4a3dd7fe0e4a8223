"""The decision of one stage, with its reasons in numbers and the action it suggests.

`recommend` reads the stage's result tables (pilot.effects) against its gate, rule by rule:
investigate (pause) when the data cannot be trusted — a sample-ratio mismatch or data-quality
problems; stop (roll back) when the best arm harms a guardrail; adjust when one change would help —
narrow the programme to the customer groups it works for, drop an arm clearly worse than control,
make a fading reward dynamic, reprice an uplift that does not pay; stop when the effect is clearly
below the MDE; advance when the gate is met; extend otherwise, saying for how long.
"""
from __future__ import annotations

import math
from typing import Any

from pilot.analysis_config import HETEROGENEITY_ALPHA, SRM_ALPHA, AnalysisConfig, Gate
from pilot.effects import good
from pilot.metrics import CATALOGUE

Row = dict[str, Any]
Finding = tuple[Row, Row]  # (reason, action)


def recommend(config: AnalysisConfig, results: Row, quality: Row) -> Row:
    """One decision for the stage with reasons in numbers and the concrete action it suggests."""
    untrusted = _untrusted(results, quality)
    if untrusted:
        return _decision("investigate", None, untrusted, {"type": "pause"})
    best = _best_arm(config, results)
    harmed = [r for r in results["metrics"] if r.get("harmed") and r["arm"] == best]
    if harmed and config.gate.no_guardrail_harm:
        return _decision("stop", best, [_harm_reason(r) for r in harmed], {"type": "rollback"})
    if results["unit"] == "customer" and best is not None:
        for adjustment in ADJUSTMENTS:
            found = adjustment(config, results, best)
            if found is not None:
                return _decision("adjust", best, [found[0]], found[1])
    return _verdict(config, results, best)


def _decision(decision: str, arm: str | None, reasons: list[Row], action: Row) -> Row:
    return {"decision": decision, "arm": arm, "reasons": reasons, "action": action}


def _primary(results: Row, arm: str) -> Row | None:
    return next((r for r in results["metrics"] if r["arm"] == arm and r["role"] == "primary"
                 and r.get("method") != "ancova"), None)


def _significant(r: Row | None, alpha: float) -> bool:
    p = None if r is None else (r.get("p_holm") if r.get("p_holm") is not None else r.get("p_value"))
    return p is not None and p < alpha


def _untrusted(results: Row, quality: Row) -> list[Row]:
    """Why the results are not to be trusted: arm sizes off the weights, problems in the data."""
    reasons = []
    srm = results["srm"]
    if srm.get("p_value") is not None and srm["p_value"] < SRM_ALPHA:
        reasons.append({"code": "sample_ratio_mismatch", "p_value": srm["p_value"], "observed": srm["observed"],
                        "expected": srm["expected"],
                        "message": f"Arm sizes {srm['observed']} differ from the planned weights "
                                   f"(χ² p = {srm['p_value']:.2g}): assignment or data is broken; "
                                   "results are not to be trusted."})
    return reasons + [{"code": "data_quality", **problem} for problem in quality.get("problems", [])]


def _best_arm(config: AnalysisConfig, results: Row) -> str | None:
    """The treatment arm that moves the primary metric furthest the good way."""
    def score(arm: str) -> float:
        r = _primary(results, arm)
        return -math.inf if r is None or r["effect_rel"] is None else good(config.primary_metric, r["effect_rel"])
    treatments = [a["variant"] for a in results["arms"] if a["role"] == "treatment"]
    return max(treatments, key=score) if treatments else None


def _harm_reason(r: Row) -> Row:
    return {"code": "guardrail_harmed", "arm": r["arm"], "metric": r["metric"], "effect_rel": r["effect_rel"],
            "ci_rel": [r["ci_rel_low"], r["ci_rel_high"]], "max_harm": r["max_harm"], "p_value": r["p_value"],
            "message": f"{r['metric']} moved {r['effect_rel']:+.1%} in {r['arm']} "
                       f"(CI {r['ci_rel_low']:+.1%} to {r['ci_rel_high']:+.1%}); at most "
                       f"{r['max_harm']:.1%} harm is tolerated."}


# -- adjustments: each returns (reason, action) when it applies to the best arm, else None ---------

def _narrow_groups(config: AnalysisConfig, results: Row, best: str) -> Finding | None:
    """The arm works in some customer groups and not in others (Cochran's Q at the stricter bar)."""
    metric, alpha = config.primary_metric, config.alpha
    groups = [g for g in results["groups"] if g["arm"] == best and g["n_control"] and g["n_treatment"]]
    het = results["heterogeneity"].get(best, {})
    works = [g for g in groups if g.get("p_bh") is not None and g["p_bh"] < alpha and good(metric, g["effect_abs"]) > 0]
    fails = [g for g in groups if g not in works]
    if not (het.get("p_value") is not None and het["p_value"] < HETEROGENEITY_ALPHA and works and fails):
        return None
    keep = [g["group"] for g in works]
    good_groups = ", ".join(f"{g['group']} {_pct(g['effect_rel'])}" for g in works)
    bad_groups = ", ".join(f"{g['group']} {_pct(g['effect_rel'])}" for g in fails)
    return ({"code": "works_in_some_groups", "arm": best, "q": het["q"], "p_value": het["p_value"],
             "groups": {g["group"]: {"effect_rel": g["effect_rel"], "p_bh": g["p_bh"]} for g in groups},
             "message": f"{best} works for {good_groups} but not for {bad_groups} (Cochran's Q p = "
                        f"{het['p_value']:.2g}). Target {', '.join(keep)}."},
            {"type": "narrow_groups", "groups": keep})


def _drop_arm(config: AnalysisConfig, results: Row, best: str) -> Finding | None:
    """Another treatment arm is significantly worse than control in the primary metric."""
    metric = config.primary_metric
    for arm in [a["variant"] for a in results["arms"] if a["role"] == "treatment"]:
        r = _primary(results, arm)
        if arm != best and r is not None and _significant(r, config.alpha) and good(metric, r["effect_abs"]) < 0:
            return ({"code": "arm_clearly_worse", "arm": arm, "effect_rel": r["effect_rel"], "p_holm": r["p_holm"],
                     "message": f"{arm} lowers {metric} by {r['effect_rel']:+.1%} "
                                f"(Holm p = {r['p_holm']:.2g}): drop it."},
                    {"type": "drop_arm", "arm": arm})
    return None


def _make_dynamic(config: AnalysisConfig, results: Row, best: str) -> Finding | None:
    """The best arm helps, but its effect shrinks week by week (a novelty effect)."""
    trend = results["trend"].get(best, {})
    primary = _primary(results, best)
    if not (trend.get("fading") and primary is not None and good(config.primary_metric, primary["effect_abs"]) > 0):
        return None
    return ({"code": "effect_fading", "arm": best, "slope_per_week": trend["slope"], "p_value": trend["p_value"],
             "message": f"The effect of {best} shrinks by {abs(trend['slope']):.2f} per customer each week "
                        f"(p = {trend['p_value']:.2g}): a novelty effect. Make the reward dynamic "
                        "(rotating offers, rising tiers) to keep it."},
            {"type": "make_dynamic", "arm": best})


def _reprice(config: AnalysisConfig, results: Row, best: str) -> Finding | None:
    """The best arm significantly lifts the metric but its ROI is below the gate's bar."""
    metric = config.primary_metric
    primary = _primary(results, best)
    econ = results["economics"].get(best, {})
    if not (primary is not None and _significant(primary, config.alpha) and good(metric, primary["effect_abs"]) > 0
            and econ.get("roi") is not None and econ["roi"] < config.gate.min_roi):
        return None
    rate = econ["break_even_discount_rate"]
    return ({"code": "uplift_but_unprofitable", "arm": best, "effect_rel": primary["effect_rel"], "roi": econ["roi"],
             "net_profit_per_customer": econ["net_profit_per_customer"], "break_even_discount_rate": rate,
             "message": f"{best} lifts {metric} by {primary['effect_rel']:+.1%} but loses "
                        f"{-econ['net_profit_per_customer']:.2f} per customer (ROI {econ['roi']:.0%}). "
                        f"At a discount of {rate:.1%} or less the same uplift would pay for itself."},
            {"type": "reprice", "arm": best, "break_even_discount_rate": rate})


ADJUSTMENTS = (_narrow_groups, _drop_arm, _make_dynamic, _reprice)  # the first that applies is the advice


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1%}"


# -- no adjustment: stop, advance or extend -------------------------------------------------------

def _verdict(config: AnalysisConfig, results: Row, best: str | None) -> Row:
    """Stop when the effect is clearly below the MDE, advance when the gate is met, else extend."""
    gate, metric, alpha = config.gate, config.primary_metric, config.alpha
    days, n_min = results.get("days", 0.0), min((a["n"] for a in results["arms"]), default=0)
    primary = _primary(results, best) if best else None
    enough_time, enough_units = days >= gate.min_days, n_min >= gate.min_units_per_arm
    if primary is not None and primary["ci_rel_high"] is not None and enough_time and enough_units \
            and good(metric, primary["ci_rel_high"] if CATALOGUE[metric].good_direction == "up"
                     else primary["ci_rel_low"]) < config.mde \
            and not _significant(primary, alpha):
        return _decision("stop", best, [_below_mde_reason(config, best, primary)], {"type": "rollback"})
    significant = primary is not None and _significant(primary, alpha) and good(metric, primary["effect_abs"]) > 0
    econ = results["economics"].get(best, {}) if best else {}
    roi = econ.get("roi")
    gate_checks = {"min_days": enough_time, "min_units_per_arm": enough_units,
                   "significant": significant or not gate.require_significant,
                   "roi": roi is None or roi >= gate.min_roi or results["unit"] == "store"}
    if all(gate_checks.values()):
        return _decision("advance", best, [_gate_met_reason(config, best, primary, econ, days, n_min)],
                         {"type": "advance"})
    power = results["power"].get(best, {}) if best else {}
    missing = [k for k, ok in gate_checks.items() if not ok]
    reason = {"code": "underpowered", "arm": best, "gate_unmet": missing, "days": days, "min_days": gate.min_days,
              "units_per_arm": n_min, "min_units_per_arm": gate.min_units_per_arm,
              "mde_rel_now": power.get("mde_rel_now"), "more_units_needed": power.get("more_units_needed"),
              "days_needed": power.get("days_needed"), "message": _extend_message(gate, days, n_min, power, missing)}
    extra_days = max(gate.min_days - days, 0) if not enough_time else power.get("days_needed") or 7
    return _decision("extend", best, [reason], {"type": "extend", "days": math.ceil(extra_days),
                                                "more_units": power.get("more_units_needed")})


def _below_mde_reason(config: AnalysisConfig, best: str, primary: Row) -> Row:
    mde = config.mde
    return {"code": "effect_below_mde", "arm": best, "effect_rel": primary["effect_rel"],
            "ci_rel": [primary["ci_rel_low"], primary["ci_rel_high"]], "mde": mde,
            "message": f"The best arm ({best}) moves {config.primary_metric} by "
                       f"{primary['effect_rel']:+.1%}, and at most {primary['ci_rel_high']:+.1%}: "
                       f"clearly below the {mde:.1%} the pilot set out to find."}


def _gate_met_reason(config: AnalysisConfig, best: str | None, primary: Row, econ: Row, days: float,
                     n_min: int) -> Row:
    roi, profit = econ.get("roi"), econ.get("projected_net_profit")
    return {"code": "gate_met", "arm": best, "effect_rel": primary["effect_rel"],
            "ci_rel": [primary["ci_rel_low"], primary["ci_rel_high"]], "p_value": primary["p_value"],
            "roi": roi, "days": days, "units_per_arm": n_min, "projected_net_profit": profit,
            "projected_incremental_revenue": econ.get("projected_incremental_revenue"),
            "message": f"{best} lifts {config.primary_metric} by {primary['effect_rel']:+.1%} "
                       f"(CI {primary['ci_rel_low']:+.1%} to {primary['ci_rel_high']:+.1%}, p = "
                       f"{primary['p_value']:.2g})" + (f", ROI {roi:.0%}" if roi is not None else "")
                       + (f"; projected net profit at the next stage: {profit:,.0f}" if profit is not None else "")
                       + "."}


def _extend_message(gate: Gate, days: float, n_min: int, power: Row, missing: list[str]) -> str:
    parts = []
    if "min_days" in missing:
        parts.append(f"{days:.0f} of {gate.min_days} days run")
    if "min_units_per_arm" in missing:
        parts.append(f"{n_min} of {gate.min_units_per_arm} units in the smallest arm")
    if power.get("mde_rel_now") is not None:
        parts.append(f"the effect detectable now is {power['mde_rel_now']:.1%}")
    if power.get("more_units_needed"):
        parts.append(f"about {int(power['more_units_needed']):,} more units are needed for the target MDE")
    if "roi" in missing:
        parts.append("ROI is below the bar but not yet certain")
    return "Not enough evidence yet: " + "; ".join(parts) + "."
