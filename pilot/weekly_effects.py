"""The week-by-week table of a stage and its trend: does the effect fade (a novelty effect)?

Week w of a unit is the w-th week since its exposure; each week compares only the units exposed
for the whole of it, so that late joiners do not dilute the later weeks.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

from experiments.means import welch
from experiments.novelty import effect_trend
from experiments.results import EffectResult
from experiments.statistics import SampleMeanStatistic
from experiments.stratified import post_stratified
from pilot.aggregation import METRIC_SOURCES, Cube, product_sum
from pilot.analysis_config import AnalysisConfig
from pilot.result_rows import effect_row


def weekly_value(primary: str) -> str:
    """The per-unit value the week-by-week table follows: visits for a visits metric, else spend."""
    return "visits" if METRIC_SOURCES.get(primary, ("spend",))[0] == "visits" else "spend"


def weekly_effects(cube: Cube, config: AnalysisConfig) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Each treatment arm's effect per week since exposure (Welch), and the trend of those effects."""
    value = weekly_value(config.primary_metric)
    weeks = sorted({w for (_, w) in cube.by_week})
    periods = sorted({p for (_, p) in cube.by_period})
    rows, trends = [], {}

    def stat(arm: str, w: int, period: int | None = None) -> SampleMeanStatistic:
        """The arm's units exposed the whole week w (of one allocation period, or all)."""
        n = sum(c for (v, f, p), c in cube.full_week_cells.items()
                if v == arm and f >= w + 1 and period in (None, p))
        s = cube.by_week.get((arm, w), {}) if period is None else cube.week_cells.get((arm, w, period), {})
        return SampleMeanStatistic(n, s.get(value, 0.0), product_sum(s, value, value))

    def effect(arm: str, w: int) -> EffectResult:
        """Welch per week; after a weight change, per allocation period and post-stratified."""
        control, inference = config.control, config.inference
        if len(periods) < 2:
            return welch(stat(control, w), stat(arm, w), inference)
        strata = [welch(c, t, inference) for c, t in ((stat(control, w, p), stat(arm, w, p)) for p in periods)
                  if c.n >= 2 and t.n >= 2]
        return post_stratified(strata, inference)
    for arm in config.treatments:
        per = [effect_row(effect(arm, w), arm=arm, week=w + 1, metric=f"{value}_per_customer_week") for w in weeks]
        rows += per
        ok = [r for r in per if r["se"] == r["se"] and r["se"] > 0]
        trends[arm] = asdict(effect_trend([r["week"] for r in ok], [r["effect_abs"] for r in ok],
                                          [r["se"] for r in ok], config.alpha))
    return rows, trends
