"""Every table of a report as rows of plain values, for CSV and JSON exports.

Each table declares its columns, so that a CSV has its header even when the table is empty (a
customer pilot has no store rows, a store pilot no customer groups).
"""
from __future__ import annotations

import csv
import io
from collections.abc import Callable
from typing import Any

EFFECT_COLUMNS = ("n_control", "n_treatment", "mean_control", "mean_treatment", "effect_abs", "se", "ci_low",
                  "ci_high", "effect_rel", "ci_rel_low", "ci_rel_high", "p_value")
ECONOMICS_COLUMNS = ("incremental_revenue_per_customer", "incremental_margin_per_customer", "cost_per_customer",
                     "net_profit_per_customer", "roi", "break_even_discount_rate", "net_profit_low",
                     "net_profit_high", "projected_customers", "projected_net_profit")
POWER_COLUMNS = ("mde_rel_now", "mde_abs_now", "target_mde_rel", "units_now", "units_needed", "more_units_needed",
                 "days_needed", "variance_reduction", "powered")
HETEROGENEITY_COLUMNS = ("q", "df", "p_value", "i_squared", "pooled_effect", "scale", "message")
TREND_COLUMNS = ("slope", "se", "p_value", "intercept", "fading", "message")
STORE_COLUMNS = ("arm", "store_id", "spend", "visits", "items", "pre_spend", "pre_visits", "pre_items")

COLUMNS: dict[str, tuple[str, ...]] = {
    "metrics": ("arm", "metric", "role", "kind", "method", *EFFECT_COLUMNS, "p_holm", "seq_ci_low", "seq_ci_high",
                "seq_p_value", "variance_reduction", "harmed", "label"),  # label: a defined metric's 'nps (v2)'
    "groups": ("arm", "group", "metric", "method", *EFFECT_COLUMNS, "p_bh"),
    "weeks": ("arm", "week", "metric", *EFFECT_COLUMNS, "method"),
    "economics": ("arm", *ECONOMICS_COLUMNS),
    "power": ("arm", *POWER_COLUMNS),
    "srm": ("variant", "observed", "expected", "p_value", "mismatch"),
    "heterogeneity": ("arm", "metric", *HETEROGENEITY_COLUMNS),
    "trend": ("arm", "metric", *TREND_COLUMNS),
    "stores": STORE_COLUMNS,
    "verdicts": ("arm", "verdict", "codes", "reasons"),
    "group_economics": ("arm", "group", "n_control", "n_treatment", "participant_value", "ordinary_value",
                        "incremental_margin_per_participant", "cost_per_participant", "net_per_participant",
                        "net_low", "net_high", "out_earns"),
}


def _pick(name: str, row: dict[str, Any], **extra: Any) -> dict[str, Any]:
    row = {**row, **extra}
    return {k: row.get(k) for k in COLUMNS[name]}


def metrics(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [_pick("metrics", r) for r in results.get("metrics", [])]


def groups(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every metric's effect per customer group (the primary metric's first)."""
    return [_pick("groups", r) for r in results.get("groups", []) + results.get("metric_groups", [])]


def weeks(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The fading test's weekly value (`…_per_customer_week`), then every metric's effect per week."""
    return [_pick("weeks", r) for r in results.get("weeks", []) + results.get("metric_weeks", [])]


def economics(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"arm": arm, **{k: e.get(k) for k in ECONOMICS_COLUMNS}, **{k: v for k, v in e.items() if k != "groups"}}
            for arm, e in results.get("economics", {}).items()]


def group_economics(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per arm and customer group: a participant's value against the same group's ordinary customer."""
    return [_pick("group_economics", g, arm=arm) for arm, e in results.get("economics", {}).items()
            for g in e.get("groups", [])]


def power(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"arm": arm, **{k: p.get(k) for k in POWER_COLUMNS}, **p} for arm, p in results.get("power", {}).items()]


def srm(results: dict[str, Any]) -> list[dict[str, Any]]:
    s = results.get("srm", {})
    return [{"variant": v, "observed": o, "expected": e, "p_value": s.get("p_value"), "mismatch": s.get("mismatch")}
            for v, o, e in zip(s.get("variants", []), s.get("observed", []), s.get("expected", []))]


def _primary(results: dict[str, Any]) -> str | None:
    return next((r["metric"] for r in results.get("metrics", []) if r.get("role") == "primary"), None)


def heterogeneity(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Cochran's Q per arm, of the primary metric and then of every other metric."""
    primary = [_pick("heterogeneity", h, arm=arm, metric=_primary(results))
               for arm, h in results.get("heterogeneity", {}).items()]
    return primary + [_pick("heterogeneity", h) for h in results.get("metric_heterogeneity", [])]


def trend(results: dict[str, Any]) -> list[dict[str, Any]]:
    metric = next((w["metric"] for w in results.get("weeks", [])), None)
    return [_pick("trend", t, arm=arm, metric=metric) for arm, t in results.get("trend", {}).items()]


def stores(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [{**{k: r.get(k) for k in STORE_COLUMNS}, **r} for r in results.get("stores", [])]


def verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each treatment arm's verdict (keep, drop_harm, drop_worse, undecided) with its reasons."""
    return [{"arm": v["arm"], "verdict": v["verdict"], "codes": " ".join(r["code"] for r in v["reasons"]),
             "reasons": " ".join(r["message"] for r in v["reasons"])} for v in results.get("verdicts", [])]


TABLES: dict[str, Callable[[dict[str, Any]], list[dict[str, Any]]]] = {
    "metrics": metrics, "groups": groups, "weeks": weeks, "economics": economics, "power": power, "srm": srm,
    "heterogeneity": heterogeneity, "trend": trend, "stores": stores, "verdicts": verdicts,
    "group_economics": group_economics}


def table(results: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """One named table; KeyError for an unknown name."""
    return TABLES[name](results)


def to_csv(rows: list[dict[str, Any]], columns: tuple[str, ...] = ()) -> str:
    """Rows as CSV text with a header: `columns`, then any other key of the rows in first-seen order
    (so a table without rows still has its header)."""
    names = list(columns)
    for row in rows:
        names += [k for k in row if k not in names]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buffer.getvalue()
