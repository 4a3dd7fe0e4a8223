"""The decision of one stage, with its reasons in numbers and the action it suggests.

`recommend` composes the stage's decision from the per-arm verdicts (pilot.verdicts) and the gate,
rule by rule: investigate (pause) when the data cannot be trusted — a sample-ratio mismatch or
data-quality problems; stop (roll back) when every treatment arm is dropped (a guardrail harmed, or
clearly worse); otherwise the best arm that is not dropped is judged: adjust when one change would
help — make a fading reward dynamic, narrow the programme to the customer groups it works for,
reprice an uplift that does not pay; stop when its effect is clearly below the MDE; advance when the
gate is met; extend otherwise, saying for how long. Dropped arms ride along: an advance takes them
out of the next stage (`drop_arms`), a stage that goes on drops them now (`drop_arm`).
"""
from __future__ import annotations

import math
from typing import Any

from pilot.analysis_config import HETEROGENEITY_ALPHA, SRM_ALPHA, AnalysisConfig, Gate
from pilot.store_decision import design_limit
from pilot.verdicts import DROPPED, arm_verdicts, best_arm, treatments
from pilot.verdicts import primary as _primary
from pilot.verdicts import significant as _significant

Row = dict[str, Any]
Finding = tuple[Row, Row]  # (reason, action)


def recommend(config: AnalysisConfig, results: Row, quality: Row) -> Row:
    """One decision for the stage with reasons in numbers, the concrete action it suggests, the
    verdict of every arm and a one-line summary."""
    verdicts = arm_verdicts(config, results)
    untrusted = _untrusted(results, quality)
    if untrusted:
        return _decision("investigate", None, untrusted, {"type": "pause"}, verdicts)
    dropped = [v for v in verdicts if v["verdict"] in DROPPED]
    remaining = [a for a in treatments(results) if a not in {v["arm"] for v in dropped}]
    if dropped and not remaining:
        return _decision("stop", best_arm(config, results), [r for v in dropped for r in v["reasons"]],
                         {"type": "rollback"}, verdicts)
    best = best_arm(config, results, remaining)
    limited = design_limit(config, results, best) if results["unit"] == "store" else None
    if limited is not None:  # a store design too small for significance: more stores, not more days
        return _with_drops("extend", best, [limited[0]], limited[1], dropped, verdicts)
    if results["unit"] == "customer" and best is not None:
        for adjustment in ADJUSTMENTS:
            found = adjustment(config, results, best)
            if found is not None:
                return _with_drops("adjust", best, [found[0]], found[1], dropped, verdicts)
    outcome = _verdict(config, results, best)
    return _with_drops(outcome["decision"], best, outcome["reasons"], outcome["action"], dropped, verdicts)


def _with_drops(decision: str, best: str | None, reasons: list[Row], action: Row, dropped: list[Row],
                verdicts: list[Row]) -> Row:
    """The best arm's decision with the dropped arms composed in: an advance or a narrowing takes them
    along (`drop_arms`), a stop keeps their reasons, anything else becomes dropping them now."""
    if not dropped:
        return _decision(decision, best, reasons, action, verdicts)
    arms, drop_reasons = [v["arm"] for v in dropped], [r for v in dropped for r in v["reasons"]]
    if decision == "stop":
        return _decision(decision, best, reasons + drop_reasons, action, verdicts)
    if action["type"] in ("advance", "narrow_groups"):
        return _decision(decision, best, reasons + drop_reasons, {**action, "drop_arms": arms}, verdicts)
    return _decision("adjust", best, drop_reasons, {"type": "drop_arm", "arm": arms[0], "drop_arms": arms}, verdicts)


def _plain(decision: str, arm: str | None, reasons: list[Row], action: Row) -> Row:
    return {"decision": decision, "arm": arm, "reasons": reasons, "action": action}


def _decision(decision: str, arm: str | None, reasons: list[Row], action: Row, verdicts: list[Row]) -> Row:
    return {"decision": decision, "arm": arm, "reasons": reasons, "action": action, "verdicts": verdicts,
            "summary": _summary(decision, arm, action, verdicts)}


def _summary(decision: str, arm: str | None, action: Row, verdicts: list[Row]) -> str:
    """The decision in one line, e.g. 'advance with bonus; drop tiers: spend_per_visit -11.0% (CI -13.5% to
    -8.3%), at most 2.0% harm tolerated'."""
    head = {"advance": f"advance with {arm}", "adjust": f"adjust ({action['type'].replace('_', ' ')})",
            "extend": f"extend by {action.get('days')} days"}.get(decision, decision)
    drops = []
    for v in verdicts:
        if v["verdict"] in DROPPED and decision != "investigate":
            drops.append(f"drop {v['arm']}: " + ", ".join(_short(r) for r in v["reasons"]))
    return "; ".join([head, *drops])


def _short(r: Row) -> str:
    ci = r.get("ci_rel") or [None, None]
    span = f" (CI {_pct(ci[0])} to {_pct(ci[1])})"
    if r["code"] == "guardrail_harmed":
        return f"{r['metric']} {_pct(r['effect_rel'])}{span}, at most {r['max_harm']:.1%} harm tolerated"
    against = r.get("best") or "control"
    return f"{r['metric']} {_pct(r['effect_rel'])} against {against}{span}"


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


# -- adjustments: each returns (reason, action) when it applies to the best arm, else None ---------

def _narrow_groups(config: AnalysisConfig, results: Row, best: str) -> Finding | None:
    """The arm works in some customer groups and not in others (Cochran's Q at the stricter bar)."""
    metric, alpha = config.primary_metric, config.alpha
    groups = [g for g in results["groups"] if g["arm"] == best and g["n_control"] and g["n_treatment"]]
    het = results["heterogeneity"].get(best, {})
    works = [g for g in groups
             if g.get("p_bh") is not None and g["p_bh"] < alpha and config.good(metric, g["effect_abs"]) > 0]
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


def _make_dynamic(config: AnalysisConfig, results: Row, best: str) -> Finding | None:
    """The best arm helped at first, but its effect shrinks week by week (a novelty effect): fading, and
    its first week's effect the good way (the stage's primary effect when there is no weekly table) —
    not the stage's average, which a novelty that wore off can leave below zero by chance."""
    trend = results["trend"].get(best, {})
    first = next((r for r in results.get("weeks", []) if r["arm"] == best and r.get("week") == 1
                  and r.get("effect_abs") is not None), None)
    primary = _primary(results, best)
    helped = (trend.get("direction", 1.0) * first["effect_abs"] > 0 if first is not None else
              primary is not None and primary["effect_abs"] is not None
              and config.good(config.primary_metric, primary["effect_abs"]) > 0)
    if not (trend.get("fading") and helped):
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
    if not (primary is not None and _significant(primary, config.alpha)
            and config.good(metric, primary["effect_abs"]) > 0
            and econ.get("roi") is not None and econ["roi"] < config.gate.min_roi):
        return None
    rate = econ["break_even_discount_rate"]
    return ({"code": "uplift_but_unprofitable", "arm": best, "effect_rel": primary["effect_rel"], "roi": econ["roi"],
             "net_profit_per_customer": econ["net_profit_per_customer"], "break_even_discount_rate": rate,
             "message": f"{best} lifts {metric} by {primary['effect_rel']:+.1%} but loses "
                        f"{-econ['net_profit_per_customer']:.2f} per customer (ROI {econ['roi']:.0%}). "
                        f"At a discount of {rate:.1%} or less the same uplift would pay for itself."},
            {"type": "reprice", "arm": best, "break_even_discount_rate": rate})


# the first that applies is the advice (dropping an arm is a verdict: pilot.verdicts). A fading effect comes
# before narrowing: the groups' effects are stage averages of an effect that wears off in every group, so
# the reward's dynamics are the first fix (docs/store_pilots.md, "Novelty that is caught")
ADJUSTMENTS = (_make_dynamic, _narrow_groups, _reprice)


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
            and config.good(metric, primary["ci_rel_high"] if config.info(metric).good_direction == "up"
                     else primary["ci_rel_low"]) < config.mde \
            and not _significant(primary, alpha):
        return _plain("stop", best, [_below_mde_reason(config, best, primary)], {"type": "rollback"})
    significant = (primary is not None and _significant(primary, alpha)
                   and config.good(metric, primary["effect_abs"]) > 0)
    econ = results["economics"].get(best, {}) if best else {}
    roi = econ.get("roi")
    gate_checks = {"min_days": enough_time, "min_units_per_arm": enough_units,
                   "significant": significant or not gate.require_significant,
                   "roi": roi is None or roi >= gate.min_roi or results["unit"] == "store"}
    if all(gate_checks.values()):
        return _plain("advance", best, [_gate_met_reason(config, best, primary, econ, days, n_min)],
                         {"type": "advance"})
    power = results["power"].get(best, {}) if best else {}
    missing = [k for k, ok in gate_checks.items() if not ok]
    reason = {"code": "underpowered", "arm": best, "gate_unmet": missing, "days": days, "min_days": gate.min_days,
              "units_per_arm": n_min, "min_units_per_arm": gate.min_units_per_arm,
              "mde_rel_now": power.get("mde_rel_now"), "more_units_needed": power.get("more_units_needed"),
              "days_needed": power.get("days_needed"), "message": _extend_message(gate, days, n_min, power, missing)}
    extra_days = max(gate.min_days - days, 0) if not enough_time else power.get("days_needed") or 7
    return _plain("extend", best, [reason], {"type": "extend", "days": math.ceil(extra_days),
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
        parts.append(f"{n_min} of {gate.min_units_per_arm} {_noun(power)} in the smallest arm")
    if power.get("mde_rel_now") is not None:
        parts.append(f"the effect detectable now is {power['mde_rel_now']:.1%}")
    if power.get("more_units_needed"):
        parts.append(f"about {int(power['more_units_needed']):,} more {_noun(power)} are needed for the target MDE")
    if power.get("explanation"):  # the eligible pool is (nearly) assigned: pilot.planning says what more days can do
        parts.append(power["explanation"])
    if "roi" in missing:
        parts.append("ROI is below the bar but not yet certain")
    return "Not enough evidence yet: " + "; ".join(parts) + "."


def _noun(power: Row) -> str:
    """What the gate's sample counts: stores for a store pilot (its power row says so), else units."""
    return "stores" if power.get("sample_unit") == "store" else "units"
