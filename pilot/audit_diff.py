"""What an audited change changed: the before and after of an audit event as a list of field changes."""
from __future__ import annotations

from typing import Any

MISSING = object()


def changes(before: Any, after: Any, path: str = "") -> list[dict[str, Any]]:
    """Every value that differs between `before` and `after`, as {"path", "before", "after"} (None for a
    side that has no such value), nested dicts by dotted path and lists by [index] when their lengths agree."""
    if before == after or (before is None or before is MISSING) and (after is None or after is MISSING):
        return []
    if not path and (before is None or after is None):  # created or deleted: each field on its own
        before, after = before or {}, after or {}
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for key in [*before, *(k for k in after if k not in before)]:
            out += changes(before.get(key, MISSING), after.get(key, MISSING), f"{path}.{key}" if path else str(key))
        return out
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after) and \
            any(isinstance(x, (dict, list)) for x in before + after):
        return [c for i, (b, a) in enumerate(zip(before, after)) for c in changes(b, a, f"{path}[{i}]")]
    return [{"path": path or "(all)", "before": None if before is MISSING else before,
             "after": None if after is MISSING else after}]
