"""Result rows, shared by an analysis run's tables (pilot.effects) and `pilot analyse` (pilot.csv_analysis).

One row per comparison: the effect's numbers under their field names, the caller's labels, the
always-valid columns where asked for, adjusted p-values under the key each output names them by
(`p_holm` in a run's tables, `p_value_holm` in the CLI's), and JSON cleaning at the end.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any

import numpy as np

from experiments.multiple import holm
from experiments.results import EffectResult
from experiments.sequential import DEFAULT_TUNING, sequential
from pilot.analysis_config import AnalysisConfig

# every field but what only combinations of results need (the control mean's variance and covariance)
STORED_COLUMNS = tuple(f.name for f in fields(EffectResult) if f.name not in ("var_mean_control", "cov_effect_control"))


def effect_row(effect: EffectResult, columns: Sequence[str] = STORED_COLUMNS, **extra: Any) -> dict[str, Any]:
    """The effect's `columns`, then `extra`."""
    row = {c: getattr(effect, c) for c in columns}
    row.update(extra)
    return row


def sequential_columns(effect: EffectResult, alpha: float, tuning: float = DEFAULT_TUNING,
                       relative: bool = True) -> dict[str, Any]:
    """The always-valid interval and p-value of the effect (and the interval of the relative effect)."""
    n = effect.n_control + effect.n_treatment
    seq = sequential(effect.effect_abs, effect.se, n, alpha, tuning)
    out = {"seq_ci_low": seq.ci_low, "seq_ci_high": seq.ci_high, "seq_p_value": seq.p_value}
    if relative:
        rel = sequential(effect.effect_rel, effect.se_rel, n, alpha, tuning)  # the relative effect's own error
        out.update(seq_ci_rel_low=rel.ci_low, seq_ci_rel_high=rel.ci_high)
    return out


def adjust_p_values(rows: list[dict[str, Any]], key: str, method: Callable[[Sequence[float]], list[float]] = holm,
                    missing: float | None = None) -> None:
    """The rows' p-values adjusted as one family, written to `key`. A p-value that is not a number
    is left out of the family (and adjusted to NaN), or counted as `missing` when that is given."""
    p_values = [r["p_value"] if missing is None or not math.isnan(r["p_value"]) else missing for r in rows]
    for r, p in zip(rows, method(p_values)):
        r[key] = p


def arm_rows(config: AnalysisConfig, counts: Sequence[int]) -> list[dict[str, Any]]:
    """Each arm of the stage with its weight, units, role and mechanic."""
    return [{"variant": k, "weight": config.allocation[k], "n": n,
             "role": "control" if k == config.control else "treatment", "mechanic": config.mechanics.get(k)}
            for k, n in zip(config.arms, counts)]


def clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null, numpy scalars plain numbers, keys strings."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value
