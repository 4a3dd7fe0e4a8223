"""The drill-down of one metric: its effect per customer group and per week since exposure, as
tables with confidence intervals and the multiple-testing adjustment named (rows as the analysis
stored them: nothing is recomputed here). The fading (novelty) test follows one weekly value, the
primary's (`fading_metric`); every metric's weeks are descriptions beside it."""
from __future__ import annotations

from typing import Any

from reports.figures import heterogeneity_rows, metric_rows, week_rows

# the tests of a week's values (pilot.metric_weeks), as the page names them
WEEK_TESTS = {"welch": "Welch's t-test", "two_proportion_z": "two-proportion z-test",
              "ratio_delta": "delta method for the ratio"}
KEYS = ("arm", "n_control", "n_treatment", "mean_control", "mean_treatment", "effect_abs", "ci_low", "ci_high",
        "effect_rel", "ci_rel_low", "ci_rel_high", "p_value")


def drill_down(results: dict[str, Any], metric: str) -> dict[str, Any]:
    """One metric's groups and weeks tables, Cochran's Q per arm, and how p-values were adjusted."""
    group_rows = [{"group": r["group"], **{k: r.get(k) for k in KEYS}, "p_bh": r.get("p_bh")}
                  for r in metric_rows(results, "groups", metric)]
    weeks = [{"week": r["week"], **{k: r.get(k) for k in KEYS}, "method": r.get("method")}
             for r in week_rows(results, metric)]
    n_groups = len({r["group"] for r in group_rows})
    return {"metric": metric, "groups": group_rows, "weeks": weeks,
            "weeks_metric": next((r["metric"] for r in week_rows(results, metric)), None),
            "weeks_test": next((WEEK_TESTS.get(m, m.replace("_", " ")) for r in weeks
                                if (m := (r.get("method") or "").split("+")[0])), None),
            "fading_metric": next((r["metric"] for r in results.get("weeks", [])), None),
            "heterogeneity": [h for h in heterogeneity_rows(results, metric) if h.get("q") is not None],
            "trend": [{"arm": a, **t} for a, t in results.get("trend", {}).items()],
            "groups_adjustment": (f"Column p (BH): Benjamini–Hochberg across the {n_groups} customer groups of "
                                  "each arm (controls the false discovery rate among the groups)")
            if group_rows else None,
            "weeks_adjustment": ("Week p-values are not adjusted: each week is read as a description; the "
                                 "test of a fading effect is the one trend test per arm") if weeks else None}
