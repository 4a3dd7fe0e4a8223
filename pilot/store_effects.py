"""The effect tables of a store-randomised stage: difference-in-differences and ANCOVA on store-level
values (each store's daily spend and visits in the stage and in the pre-period), one row per method."""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

from experiments.cluster import ancova, difference_in_differences
from experiments.srm import srm_test
from experiments.statistics import RegressionAdjustedStatistic
from pilot.aggregation import Cube
from pilot.analysis_config import DEFAULT_TUNING, SRM_ALPHA, AnalysisConfig
from pilot.result_rows import adjust_p_values, arm_rows, clean, effect_row, sequential_columns

STORE_SOURCES = {"spend_per_customer": "spend", "visits_per_customer": "visits"}  # metric -> store value


def store_results(config: AnalysisConfig, cube: Cube, days: float) -> dict[str, Any]:
    """Every result table of a store-randomised stage (the customer-level tables stay empty)."""
    arms = config.arms
    counts = [sum(1 for (a, _) in cube.stores if a == k) for k in arms]
    srm = srm_test(counts, [config.allocation[k] for k in arms], threshold=SRM_ALPHA)
    rows = []
    for arm in config.treatments:
        for metric, value in STORE_SOURCES.items():
            role = "primary" if metric == config.primary_metric else "secondary"
            for method in (difference_in_differences, ancova):
                effect = method(_stores(cube, config.control, value), _stores(cube, arm, value), config.inference)
                rows.append(effect_row(effect, arm=arm, metric=metric, kind="mean", role=role, good_direction="up",
                                       **sequential_columns(effect, config.alpha, DEFAULT_TUNING)))
    adjust_p_values(rows, "p_holm", missing=1.0)
    stores = [{"arm": a, "store_id": s, **v} for (a, s), v in sorted(cube.stores.items())]
    return clean({"unit": "store", "arms": arm_rows(config, counts),
                  "srm": {**asdict(srm), "observed": counts, "variants": arms}, "metrics": rows, "stores": stores,
                  "groups": [], "heterogeneity": {}, "weeks": [], "trend": {}, "economics": {}, "power": {},
                  "days": days})


def _stores(cube: Cube, arm: str, value: str) -> RegressionAdjustedStatistic:
    """An arm's stores: the value in the stage (y) against the pre-period (x)."""
    stores = [s for (a, _), s in cube.stores.items() if a == arm]
    y = [s[value] for s in stores]
    x = [s[f"pre_{value}"] for s in stores]
    return RegressionAdjustedStatistic(len(stores), sum(y), sum(v * v for v in y), sum(x), sum(v * v for v in x),
                                       sum(a * b for a, b in zip(y, x)))
