"""Multiple comparisons: Holm (family-wise error) and Benjamini–Hochberg (false discovery rate)."""
from __future__ import annotations

import math
from collections.abc import Sequence


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values; NaN stays NaN and is not counted."""
    idx = sorted((i for i, p in enumerate(p_values) if not math.isnan(p)), key=lambda i: p_values[i])
    m, out, running = len(idx), [float("nan")] * len(p_values), 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        out[i] = running
    return out


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """Benjamini–Hochberg step-up adjusted p-values (q-values); NaN stays NaN."""
    idx = sorted((i for i, p in enumerate(p_values) if not math.isnan(p)), key=lambda i: p_values[i])
    m, out, running = len(idx), [float("nan")] * len(p_values), 1.0
    for rank in range(m - 1, -1, -1):
        i = idx[rank]
        running = min(running, p_values[i] * m / (rank + 1))
        out[i] = running
    return out
