"""The week-by-week table of a stage and its trend: does the effect fade (a novelty effect)?

Week w of a unit is the w-th week since its exposure; each week compares only the units exposed
for the whole of it, so that late joiners do not dilute the later weeks. Whether the effect fades is
tested on each unit's own contrast — its first week minus the mean of its later full weeks — between
the arms (Welch; post-stratified after a weight change), one-sided against the effect's direction
(experiments.novelty.fading_contrast): a unit's weeks are correlated (regular customers stay
regular), and the unit-level contrast takes that covariance out, where a slope fitted to the weekly
effects as if they were independent does not. The slope is still reported, as the description.
"""
from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

from experiments.means import welch
from experiments.novelty import effect_trend, fading_contrast
from experiments.results import EffectResult
from experiments.statistics import SampleMeanStatistic
from experiments.stratified import post_stratified
from pilot.aggregation import METRIC_SOURCES, Cube, product_sum
from pilot.analysis_config import AnalysisConfig
from pilot.metrics import CATALOGUE
from pilot.result_rows import effect_row


def weekly_value(primary: str) -> str:
    """The per-unit value the week-by-week table follows: visits for a visits metric, else spend."""
    return "visits" if METRIC_SOURCES.get(primary, ("spend",))[0] == "visits" else "spend"


def week_sums(cube: Cube, arm: str, w: int, period: int | None = None) -> dict[str, float]:
    """The sums of week w since exposure (0-based) over the arm's units exposed for the whole week,
    with their count `n` (of one allocation period, or all)."""
    n = sum(c for (v, f, p), c in cube.full_week_cells.items() if v == arm and f >= w + 1 and period in (None, p))
    sums = cube.by_week.get((arm, w), {}) if period is None else cube.week_cells.get((arm, w, period), {})
    return {**sums, "n": float(n)}


def weekly_effects(cube: Cube, config: AnalysisConfig) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Each treatment arm's effect per week since exposure (Welch), and the trend of those effects."""
    value = weekly_value(config.primary_metric)
    weeks = sorted({w for (_, w) in cube.by_week})
    periods = sorted({p for (_, p) in cube.by_period})
    rows, trends = [], {}

    def stat(arm: str, w: int, period: int | None = None) -> SampleMeanStatistic:
        """The arm's units exposed the whole week w (of one allocation period, or all)."""
        s = week_sums(cube, arm, w, period)
        return SampleMeanStatistic(int(s["n"]), s.get(value, 0.0), product_sum(s, value, value))

    def effect(arm: str, w: int) -> EffectResult:
        """Welch per week; after a weight change, per allocation period and post-stratified."""
        control, inference = config.control, config.inference
        if len(periods) < 2:
            return welch(stat(control, w), stat(arm, w), inference)
        strata = [welch(c, t, inference) for c, t in ((stat(control, w, p), stat(arm, w, p)) for p in periods)
                  if c.n >= 2 and t.n >= 2]
        return post_stratified(strata, inference)
    def fade(arm: str, period: int | None = None) -> SampleMeanStatistic:
        """The arm's units with two full weeks or more: Σ and Σ² of first week − mean of the later ones."""
        cells = [s for (v, w, p), s in cube.week_cells.items() if v == arm and w == 0 and period in (None, p)]
        return SampleMeanStatistic(int(sum(s.get("fade_n", 0) for s in cells)), sum(s.get("fade", 0.0) for s in cells),
                                   sum(s.get("fade*fade", 0.0) for s in cells))

    def fade_effect(arm: str) -> EffectResult:
        control, inference = config.control, config.inference
        if len(periods) < 2:
            return welch(fade(control), fade(arm), inference)
        strata = [welch(c, t, inference) for c, t in ((fade(control, p), fade(arm, p)) for p in periods)
                  if c.n >= 2 and t.n >= 2]
        return post_stratified(strata, inference)
    # spend and visits: up is good, so a fading effect was larger in the first week
    direction = 1.0 if CATALOGUE[f"{value}_per_customer"].good_direction == "up" else -1.0
    for arm in config.treatments:
        per = [effect_row(effect(arm, w), arm=arm, week=w + 1, metric=f"{value}_per_customer_week") for w in weeks]
        rows += per
        ok = [r for r in per if r["se"] == r["se"] and r["se"] > 0]
        trend = effect_trend([r["week"] for r in ok], [r["effect_abs"] for r in ok], [r["se"] for r in ok],
                             config.alpha)
        contrast = fade_effect(arm) if len(weeks) >= 2 else None
        test = fading_contrast(contrast.effect_abs, contrast.se, contrast.df, direction, config.alpha) \
            if contrast is not None else fading_contrast(math.nan, math.nan, None)
        # the decision reads `fading` and `p_value` of the early-vs-late test; the slope describes the trend
        trends[arm] = {**asdict(trend), "slope_p_value": trend.p_value, "p_value": test.p_value,
                       "fading": test.fading, "test": "first_week_vs_later", "direction": direction,
                       "early_minus_late": test.early_minus_late, "early_minus_late_se": test.se,
                       "message": trend.message or test.message}
    return rows, trends
