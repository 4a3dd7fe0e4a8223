"""Every table of a report as rows of plain values, for CSV and JSON exports."""
from __future__ import annotations

import csv
import io
from collections.abc import Callable
from typing import Any

EFFECT_COLUMNS = ("n_control", "n_treatment", "mean_control", "mean_treatment", "effect_abs", "se", "ci_low",
                  "ci_high", "effect_rel", "ci_rel_low", "ci_rel_high", "p_value")


def _pick(row: dict[str, Any], first: tuple[str, ...], more: tuple[str, ...] = ()) -> dict[str, Any]:
    return {k: row.get(k) for k in (*first, *EFFECT_COLUMNS, *more)}


def metrics(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [_pick(r, ("arm", "metric", "role", "kind", "method"),
                  ("p_holm", "seq_ci_low", "seq_ci_high", "seq_p_value", "variance_reduction", "harmed"))
            for r in results.get("metrics", [])]


def groups(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [_pick(r, ("arm", "group", "metric", "method"), ("p_bh",)) for r in results.get("groups", [])]


def weeks(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [_pick(r, ("arm", "week", "metric")) for r in results.get("weeks", [])]


def economics(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"arm": arm, **{k: v for k, v in e.items()}} for arm, e in results.get("economics", {}).items()]


def power(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"arm": arm, **p} for arm, p in results.get("power", {}).items()]


def srm(results: dict[str, Any]) -> list[dict[str, Any]]:
    s = results.get("srm", {})
    return [{"variant": v, "observed": o, "expected": e, "p_value": s.get("p_value"), "mismatch": s.get("mismatch")}
            for v, o, e in zip(s.get("variants", []), s.get("observed", []), s.get("expected", []))]


def heterogeneity(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"arm": arm, **h} for arm, h in results.get("heterogeneity", {}).items()]


def trend(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"arm": arm, **t} for arm, t in results.get("trend", {}).items()]


def stores(results: dict[str, Any]) -> list[dict[str, Any]]:
    return list(results.get("stores", []))


TABLES: dict[str, Callable[[dict[str, Any]], list[dict[str, Any]]]] = {
    "metrics": metrics, "groups": groups, "weeks": weeks, "economics": economics, "power": power, "srm": srm,
    "heterogeneity": heterogeneity, "trend": trend, "stores": stores}


def table(results: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """One named table; KeyError for an unknown name."""
    return TABLES[name](results)


def to_csv(rows: list[dict[str, Any]]) -> str:
    """Rows as CSV text with a header (the union of keys, in first-seen order)."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buffer.getvalue()
