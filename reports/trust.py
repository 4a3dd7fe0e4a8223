"""The report's trust panel: can the numbers be trusted, and how were they made?

Arranges what the analysis computed (the sample-ratio check, CUPED's variance reduction, the
methods, the sequential columns) and what the service measured about the run (looks so far, data
freshness, the plan version) into rows to show; it computes no statistic.
"""
from __future__ import annotations

from typing import Any

# Why each method: shown beside the metrics it was used for.
METHODS = {
    "cuped": "CUPED: each customer's pre-period value of the metric as covariate, which removes the variance "
             "the pre-period explains (narrower intervals for the same customers, no bias)",
    "ratio_cuped": "delta method for a ratio of sums (per visit, per basket), with CUPED on the pre-period ratio",
    "ratio_delta": "delta method for a ratio of sums (per visit, per basket)",
    "welch": "Welch's t-test on the means (unequal variances; no pre-period covariate for this metric)",
    "two_proportion_z": "two-proportion z-test (a yes/no outcome per customer)",
    "difference_in_differences": "difference in differences of store means, pre-period against the stage",
    "ancova": "ANCOVA of each store's stage value on its pre-period value with classical errors (a diagnostic)",
    "ancova_cr2": "the store decision test: ANCOVA of each store's stage value on its pre-period value with CR2 "
                  "errors and Bell–McCaffrey df, significant only when the randomisation test over the matched "
                  "assignment is too (the store is the unit, so few stores mean wide intervals)",
    "cluster_robust": "standard errors clustered by store (customers of one store are not independent)",
}
STRATIFIED = ("post-stratified by allocation period: the stage's weights changed while it ran, so each period "
              "is compared on its own and the periods are weighted by their units")


def _why(method: str) -> str:
    base, _, rest = method.partition("+")
    text = METHODS.get(base, base.replace("_", " "))
    return f"{text}; {STRATIFIED}" if rest == "post_stratified" else text


def srm(results: dict[str, Any], alpha: float) -> dict[str, Any]:
    """The sample-ratio check (a mismatch below p `alpha`): pass or fail, with each arm's units, expected
    units and shares."""
    s = results.get("srm") or {}
    observed, expected = s.get("observed", []), s.get("expected", [])
    total = sum(observed) or 1
    shares = s.get("shares") or {}
    rows = [{"variant": v, "observed": o, "expected": e, "observed_share": o / total,
             "expected_share": shares.get(v, e / (sum(expected) or 1))}
            for v, o, e in zip(s.get("variants", []), observed, expected)]
    return {"passed": not s.get("mismatch"), "p_value": s.get("p_value"), "statistic": s.get("statistic"),
            "rows": rows, "weights_changed": s.get("weights_changed", False), "alpha": alpha}


def methods(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each method used, the metrics it was used for, and why; CUPED with its variance reduction."""
    out: dict[str, dict[str, Any]] = {}
    for r in results.get("metrics", []):
        m = out.setdefault(r["method"], {"method": r["method"], "why": _why(r["method"]), "metrics": [],
                                         "variance_reduction": []})
        if r["metric"] not in m["metrics"]:
            m["metrics"].append(r["metric"])
        if r.get("variance_reduction") is not None and r.get("role") == "primary":
            m["variance_reduction"].append({"arm": r["arm"], "metric": r["metric"], "value": r["variance_reduction"]})
    if results.get("cluster_robust"):
        out["cluster_robust"] = {"method": "cluster_robust", "why": METHODS["cluster_robust"],
                                 "metrics": [_primary(results)], "variance_reduction": []}
    return list(out.values())


def _primary(results: dict[str, Any]) -> str | None:
    return next((r["metric"] for r in results.get("metrics", []) if r.get("role") == "primary"), None)


def sequential(results: dict[str, Any], looks: int) -> dict[str, Any]:
    """How often the stage was looked at and what keeps that honest: the always-valid columns."""
    rows = [{"arm": r["arm"], "metric": r["metric"], "p_value": r.get("p_value"), "seq_p_value": r.get("seq_p_value"),
             "seq_ci_rel_low": r.get("seq_ci_rel_low"), "seq_ci_rel_high": r.get("seq_ci_rel_high")}
            for r in results.get("metrics", []) if r.get("role") == "primary" and r.get("seq_p_value") is not None]
    return {"looks": looks, "rows": rows}


def panel(results: dict[str, Any], config: dict[str, Any], looks: int, fresh: dict[str, Any],
          srm_alpha: float) -> dict[str, Any]:
    """Everything the trust panel shows (`config`: the run's analysis configuration)."""
    version = config.get("plan_version")
    return {"srm": srm(results, srm_alpha), "methods": methods(results), "sequential": sequential(results, looks),
            "freshness": fresh, "plan_version": f"v{version}" if version else "not versioned",
            "data_quality": results.get("data_quality") or {}, "alpha": config.get("alpha"),
            "tuning": config.get("sequential_tuning")}
