"""A verdict for every treatment arm of a stage, with its reasons in numbers.

`keep` (better than control in the primary metric, no guardrail harmed, not clearly worse than the
best arm), `drop_harm` (a guardrail harmed: every arm is checked against every guardrail),
`drop_worse` (clearly worse than control, or than the best unharmed arm), `undecided` otherwise.
`versus_best` compares each other unharmed arm with the best one in the primary metric (the same
estimator as against control, with the best arm in control's place; Holm across those comparisons),
so that "worse than the best arm" is a test, not a difference of two point estimates. The stage's
decision (pilot.recommendation) is composed from these verdicts.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from pilot.aggregation import Cube
from pilot.analysis_config import AnalysisConfig
from pilot.effects import Comparison
from pilot.result_rows import adjust_p_values, clean, effect_row

Row = dict[str, Any]
VERDICTS = ("keep", "drop_harm", "drop_worse", "undecided")
DROPPED = ("drop_harm", "drop_worse")


def primary(results: Row, arm: str) -> Row | None:
    """The arm's primary-metric row against control (for store pilots the difference-in-differences one)."""
    return next((r for r in results["metrics"] if r["arm"] == arm and r["role"] == "primary"
                 and r.get("method") != "ancova"), None)


def significant(r: Row | None, alpha: float) -> bool:
    """Significant at alpha on the Holm-adjusted p-value (the raw one when there is none)."""
    p = None if r is None else (r.get("p_holm") if r.get("p_holm") is not None else r.get("p_value"))
    return p is not None and p < alpha


def treatments(results: Row) -> list[str]:
    return [a["variant"] for a in results["arms"] if a["role"] == "treatment"]


def harms(config: AnalysisConfig, results: Row, arm: str) -> list[Row]:
    """The arm's guardrail rows that show more harm than tolerated (none when the gate tolerates harm)."""
    if not config.gate.no_guardrail_harm:
        return []
    return [r for r in results["metrics"] if r["arm"] == arm and r.get("harmed")]


def best_arm(config: AnalysisConfig, results: Row, among: list[str] | None = None) -> str | None:
    """The treatment arm (of `among`) that moves the primary metric furthest the good way."""
    def score(arm: str) -> float:
        r = primary(results, arm)
        if r is None or r["effect_rel"] is None:
            return -math.inf
        return config.good(config.primary_metric, r["effect_rel"])
    arms = treatments(results) if among is None else among
    return max(arms, key=score) if arms else None


def versus_best(config: AnalysisConfig, cube: Cube, results: Row) -> list[Row]:
    """Each other unharmed treatment arm against the best unharmed one in the primary metric."""
    if results["unit"] != "customer":
        return []
    unharmed = [a for a in treatments(results) if not harms(config, results, a)]
    best = best_arm(config, results, unharmed)
    if best is None or len(unharmed) < 2:
        return []
    compare = Comparison(cube, replace(config, control=best))
    rows = [effect_row(compare.effect(config.primary_metric, arm)[0], arm=arm, best=best,
                       metric=config.primary_metric) for arm in unharmed if arm != best]
    adjust_p_values(rows, "p_holm", missing=1.0)
    return clean(rows)


def arm_verdicts(config: AnalysisConfig, results: Row) -> list[Row]:
    """One verdict per treatment arm, with its reasons in numbers."""
    against_best = {r["arm"]: r for r in results.get("versus_best", [])}
    return [_verdict(config, results, arm, against_best.get(arm)) for arm in treatments(results)]


def _verdict(config: AnalysisConfig, results: Row, arm: str, vs_best: Row | None) -> Row:
    harmed = harms(config, results, arm)
    if harmed:
        return {"arm": arm, "verdict": "drop_harm", "reasons": [harm_reason(r) for r in harmed]}
    metric, alpha, p = config.primary_metric, config.alpha, primary(results, arm)
    worse = []
    if p is not None and significant(p, alpha) and config.good(metric, p["effect_abs"]) < 0:
        worse.append({"code": "worse_than_control", "arm": arm, "metric": metric, "effect_rel": p["effect_rel"],
                      "ci_rel": [p["ci_rel_low"], p["ci_rel_high"]], "p_holm": p.get("p_holm"),
                      "message": f"{arm} moves {metric} by {_pct(p['effect_rel'])} against control (CI "
                                 f"{_pct(p['ci_rel_low'])} to {_pct(p['ci_rel_high'])}, Holm p = "
                                 f"{_p(p.get('p_holm'))}): drop it."})
    if vs_best is not None and significant(vs_best, alpha) and config.good(metric, vs_best["effect_abs"]) < 0:
        worse.append({"code": "worse_than_best", "arm": arm, "best": vs_best["best"], "metric": metric,
                      "effect_rel": vs_best["effect_rel"], "ci_rel": [vs_best["ci_rel_low"], vs_best["ci_rel_high"]],
                      "p_holm": vs_best["p_holm"],
                      "message": f"{arm} moves {metric} by {_pct(vs_best['effect_rel'])} against {vs_best['best']} "
                                 f"(CI {_pct(vs_best['ci_rel_low'])} to {_pct(vs_best['ci_rel_high'])}, Holm p = "
                                 f"{_p(vs_best['p_holm'])}): drop it."})
    if worse:
        return {"arm": arm, "verdict": "drop_worse", "reasons": worse}
    if p is not None and significant(p, alpha) and config.good(metric, p["effect_abs"]) > 0:
        return {"arm": arm, "verdict": "keep", "reasons": [{
            "code": "better_than_control", "arm": arm, "metric": metric, "effect_rel": p["effect_rel"],
            "ci_rel": [p["ci_rel_low"], p["ci_rel_high"]], "p_holm": p.get("p_holm"),
            "message": f"{arm} moves {metric} by {_pct(p['effect_rel'])} (CI {_pct(p['ci_rel_low'])} to "
                       f"{_pct(p['ci_rel_high'])}, Holm p = {_p(p.get('p_holm'))}) and harms no guardrail."}]}
    return {"arm": arm, "verdict": "undecided", "reasons": [{
        "code": "not_significant", "arm": arm, "metric": metric,
        "effect_rel": None if p is None else p["effect_rel"],
        "ci_rel": None if p is None else [p["ci_rel_low"], p["ci_rel_high"]],
        "p_holm": None if p is None else p.get("p_holm"),
        "message": f"{arm}: no clear effect on {metric} yet" + ("." if p is None else
                   f" ({_pct(p['effect_rel'])}, CI {_pct(p['ci_rel_low'])} to {_pct(p['ci_rel_high'])}, Holm p = "
                   f"{_p(p.get('p_holm'))}).")}]}


def harm_reason(r: Row) -> Row:
    """A harmed guardrail row as a reason in numbers."""
    return {"code": "guardrail_harmed", "arm": r["arm"], "metric": r["metric"], "effect_rel": r["effect_rel"],
            "ci_rel": [r["ci_rel_low"], r["ci_rel_high"]], "max_harm": r["max_harm"], "p_value": r["p_value"],
            "message": f"{r.get('label') or r['metric']} moved {r['effect_rel']:+.1%} in {r['arm']} "
                       f"(CI {r['ci_rel_low']:+.1%} to {r['ci_rel_high']:+.1%}); at most "
                       f"{r['max_harm']:.1%} harm is tolerated."}


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1%}"


def _p(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2g}"
