"""Every metric's effect per week since exposure: the report's week drill-down.

Week w compares the units exposed for the whole of it (as pilot.weekly_effects does for the fading
test), in each metric by its own test on that week's values — a mean by Welch, a proportion (bought
in the week) by the two-proportion z-test, a ratio of sums by the delta method — without the
pre-period covariate, whose window is not the week's. After a weight change the weeks are compared
per allocation period and post-stratified, like the whole-window effects. Week p-values are not
adjusted: the weeks describe the effect's course; the fading test is the one trend test per arm.
A metric without weekly values in the cube (retention, which needs the whole window) has no rows.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from experiments.results import EffectResult, degenerate
from experiments.stratified import post_stratified
from pilot.aggregation import WEEK_VALUES, Cube, product_key
from pilot.analysis_config import AnalysisConfig
from pilot.effects import metric_effect
from pilot.metric_columns import MetricInfo
from pilot.result_rows import clean, effect_row
from pilot.weekly_effects import week_sums

WEEK_SUMS = (*WEEK_VALUES, "converted")  # the per-unit values a week's sums carry


def weekly_info(info: MetricInfo) -> MetricInfo | None:
    """How a week's sums are read for the metric: its test without the covariate (a ratio keeps its
    denominator); None when the weeks carry no value of it."""
    if not info.defined and (info.value not in WEEK_SUMS or (info.test == "ratio" and info.other not in WEEK_SUMS)):
        return None  # (a defined metric's weeks carry its values: pilot.metric_columns.week_values)
    return info if info.test == "ratio" else replace(info, other=None)


def _effect(cube: Cube, config: AnalysisConfig, info: MetricInfo, arm: str, w: int,
            periods: list[int]) -> EffectResult:
    control, inference = config.control, config.inference
    if len(periods) < 2:
        return metric_effect(info.key, week_sums(cube, control, w), week_sums(cube, arm, w), inference, info)[0]
    pairs = [(week_sums(cube, control, w, p), week_sums(cube, arm, w, p)) for p in periods]
    strata = [metric_effect(info.key, c, t, inference, info)[0] for c, t in pairs if min(c["n"], t["n"]) >= 2]
    if not strata:
        n = (int(week_sums(cube, control, w)["n"]), int(week_sums(cube, arm, w)["n"]))
        return degenerate("post_stratified", n, (float("nan"), float("nan")), "too_few_units")
    return post_stratified(strata, inference)


def _crossed(cube: Cube, info: MetricInfo) -> bool:
    """Whether the weeks carry a ratio's numerator × denominator (not when the two come from different
    sources: then its weekly variance cannot be had, and the metric has no week-by-week breakdown)."""
    keys = {product_key(info.value, info.other), product_key(info.other, info.value)}
    return any(keys & sums.keys() for sums in cube.week_cells.values())


def metric_weeks(cube: Cube, config: AnalysisConfig) -> list[dict[str, Any]]:
    """Each metric (primary, guardrails, then the rest) × treatment arm × week since exposure: the
    week's effect with its CI (`week` counts from 1)."""
    weeks = sorted({w for (_, w) in cube.by_week})
    periods = sorted({p for (_, p) in cube.by_period})
    rows = []
    for metric in config.metrics:
        info = weekly_info(config.info(metric))
        if info is None or (info.defined and info.test == "ratio" and not _crossed(cube, info)):
            continue
        for arm in config.treatments:
            rows += [effect_row(_effect(cube, config, info, arm, w, periods), arm=arm, metric=metric, kind=info.kind,
                                week=w + 1) for w in weeks]
    return clean(rows)
