"""Sample-ratio mismatch: Pearson χ² of observed counts against the configured weights."""
from __future__ import annotations

from dataclasses import dataclass

from scipy import stats


@dataclass(frozen=True)
class SrmResult:
    statistic: float
    p_value: float
    expected: tuple[float, ...]
    mismatch: bool
    message: str | None = None


def srm_test(counts: list[int] | tuple[int, ...], weights: list[float] | tuple[float, ...],
             threshold: float = 0.001) -> SrmResult:
    """χ² goodness of fit; `mismatch` when p < threshold (a strict bar: SRM is checked often)."""
    total, wsum = sum(counts), sum(weights)
    expected = tuple(total * w / wsum for w in weights)
    if total == 0 or len(counts) < 2:
        return SrmResult(float("nan"), float("nan"), expected, False, "no_units")
    if any(e == 0 and c > 0 for c, e in zip(counts, expected)):
        return SrmResult(float("inf"), 0.0, expected, True, "units_in_zero_weight_arm")
    pairs = [(c, e) for c, e in zip(counts, expected) if e > 0]
    statistic = sum((c - e) ** 2 / e for c, e in pairs)
    p = float(stats.chi2.sf(statistic, len(pairs) - 1))
    return SrmResult(float(statistic), p, expected, p < threshold)
