"""Power glue: for each arm of a running stage, the effect detectable now and the units (and days)
still needed for the pilot's target MDE, from the arms' sums and experiments.power."""
from __future__ import annotations

import math
from typing import Any

from experiments.power import mde_means, mde_proportion, sample_size_means, sample_size_proportions
from pilot.aggregation import METRIC_SOURCES, product_sum
from pilot.analysis_config import AnalysisConfig
from pilot.metrics import CATALOGUE

Plan = tuple[float, float, float | None]  # (baseline, MDE now in absolute terms, units needed in total)


def power_table(config: AnalysisConfig, totals: dict[str, dict[str, float]], daily_new_units: float | None,
                reductions: dict[str, float | None] | None = None) -> dict[str, Any]:
    """Per treatment arm, how far the stage is from its target MDE. A mean metric tested with CUPED
    is planned with the standard deviation CUPED leaves (sd·√(1 − variance reduction) of that arm's
    comparison): the test that will be run, not the unadjusted one."""
    out = {}
    kind = CATALOGUE[config.primary_metric].kind
    c = totals[config.control]
    n_c = c.get("n", 0)
    target = config.mde
    for arm in config.treatments:
        n_t = totals[arm].get("n", 0)
        if n_c < 3 or n_t < 3:
            out[arm] = {"mde_rel_now": None, "target_mde_rel": target, "units_needed": None, "message": "too_few_units"}
            continue
        reduction = (reductions or {}).get(arm) if kind == "mean" else None
        base, mde_abs, need = (_proportion_plan(config, c, n_c, n_t) if kind == "proportion"
                               else _mean_plan(config, c, n_c, n_t, reduction))
        have = n_c + n_t
        more = max(0, need - have) if need is not None else None
        days_needed = (more / daily_new_units if daily_new_units and more is not None else None)
        out[arm] = {"mde_rel_now": mde_abs / abs(base) if base else None, "mde_abs_now": mde_abs,
                    "target_mde_rel": target, "units_now": int(have), "units_needed": need,
                    "more_units_needed": more, "days_needed": days_needed,
                    "variance_reduction": reduction,
                    "powered": bool(need is not None and have >= need)}
    return out


def _proportion_plan(config: AnalysisConfig, c: dict[str, float], n_c: float, n_t: float) -> Plan:
    p = c.get(METRIC_SOURCES[config.primary_metric][0], 0.0) / n_c
    if not 0 < p < 1:
        return p, math.inf, None
    need = sample_size_proportions(p, min(p * (1 + config.mde), 0.999), config.power, config.alpha, n_t / n_c).n_total
    return p, mde_proportion(p, n_c, n_t, config.power, config.alpha), need


def _mean_plan(config: AnalysisConfig, c: dict[str, float], n_c: float, n_t: float,
               reduction: float | None) -> Plan:
    """Means, and ratios planned on spend per unit."""
    value = METRIC_SOURCES[config.primary_metric][0] if CATALOGUE[config.primary_metric].kind == "mean" else "spend"
    mean = c.get(value, 0.0) / n_c
    sd = math.sqrt(max(product_sum(c, value, value) / n_c - mean**2, 0) * n_c / (n_c - 1))
    if reduction is not None and 0 < reduction < 1:
        sd *= math.sqrt(1 - reduction)
    mde_abs = mde_means(sd, n_c, n_t, config.power, config.alpha) if sd > 0 else math.inf
    need = sample_size_means(config.mde * mean, sd, config.power, config.alpha, n_t / n_c).n_total \
        if sd > 0 and mean else None
    return mean, mde_abs, need
