"""plotly figures of an analysis run, as JSON-ready dicts (data + layout), small enough to inline.

Figures use no template (plotly's default template alone is ~8 KB per figure) and share one
palette; each carries a title and an alt text for screen readers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import plotly
import plotly.graph_objects as go
from plotly.subplots import make_subplots

PALETTE = ("#1d3557", "#e76f51", "#2a9d8f", "#e9c46a", "#8e44ad", "#457b9d")
FONT = {"family": "system-ui, sans-serif", "size": 12}


def plotly_js_path() -> Path:
    """The plotly.js bundled with the plotly package (served by the app: no CDN)."""
    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def _layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(template="none", title={"text": title, "x": 0, "font": {"size": 15}}, font=FONT,
                      height=height, margin={"l": 150, "r": 20, "t": 50, "b": 40}, plot_bgcolor="#fff",
                      paper_bgcolor="#fff", legend={"orientation": "h", "y": -0.15})
    return fig


def _out(fig: go.Figure, key: str, alt: str) -> dict[str, Any]:
    data = fig.to_plotly_json()
    return {"key": key, "alt": alt, "data": data["data"], "layout": data["layout"]}


def _err(rows: list[dict], value: str, low: str, high: str) -> dict[str, Any]:
    return {"type": "data", "symmetric": False,
            "array": [(r[high] - r[value]) if r.get(high) is not None and r.get(value) is not None else None
                      for r in rows],
            "arrayminus": [(r[value] - r[low]) if r.get(low) is not None and r.get(value) is not None else None
                           for r in rows]}


def effects(results: dict[str, Any]) -> dict[str, Any]:
    """Relative effect with its CI (and the sequential CI) per arm × metric."""
    rows = [r for r in results.get("metrics", []) if r.get("effect_rel") is not None]
    arms = sorted({r["arm"] for r in rows})
    fig = go.Figure()
    for i, arm in enumerate(arms):
        mine = [r for r in rows if r["arm"] == arm]
        label = [f"{r['metric']} ({r['method']})" if results.get("unit") == "store" else r["metric"] for r in mine]
        fig.add_trace(go.Scatter(x=[r["effect_rel"] for r in mine], y=label, mode="markers", name=arm,
                                 marker={"color": PALETTE[i % len(PALETTE)], "size": 9},
                                 error_x=_err(mine, "effect_rel", "ci_rel_low", "ci_rel_high"),
                                 hovertemplate="%{y}: %{x:+.1%}<extra>" + arm + "</extra>"))
    fig.add_vline(x=0, line={"color": "#888", "dash": "dot"})
    fig.update_xaxes(tickformat="+.0%", title="relative effect vs control (95% CI)")
    alt = "; ".join(f"{r['arm']} {r['metric']}: {r['effect_rel']:+.1%}" for r in rows)
    return _out(_layout(fig, "Effects by arm and metric", 120 + 28 * len(rows)), "effects", alt)


def effects_absolute(results: dict[str, Any]) -> dict[str, Any]:
    """Absolute effects with CIs, one small panel per metric (units differ)."""
    rows = [r for r in results.get("metrics", []) if r.get("ci_low") is not None]
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    fig = make_subplots(rows=max(len(metrics), 1), cols=1, subplot_titles=metrics, vertical_spacing=0.08)
    arms = sorted({r["arm"] for r in rows})
    for i, metric in enumerate(metrics, start=1):
        mine = [r for r in rows if r["metric"] == metric]
        fig.add_trace(go.Scatter(x=[r["effect_abs"] for r in mine], y=[r["arm"] for r in mine], mode="markers",
                                 showlegend=False, error_x=_err(mine, "effect_abs", "ci_low", "ci_high"),
                                 marker={"color": [PALETTE[arms.index(r["arm"]) % len(PALETTE)] for r in mine]}),
                      row=i, col=1)
    alt = "; ".join(f"{r['arm']} {r['metric']}: {r['effect_abs']:+.3g}" for r in rows)
    return _out(_layout(fig, "Absolute effects (95% CI)", 90 + 95 * len(metrics)), "effects_absolute", alt)


def cumulative(history: list[dict[str, Any]]) -> dict[str, Any]:
    """Primary effect over successive runs with the fixed and the always-valid (sequential) bands."""
    fig = go.Figure()
    arms = sorted({h["arm"] for h in history})
    for i, arm in enumerate(arms):
        mine = sorted((h for h in history if h["arm"] == arm), key=lambda h: h["cutoff"])
        x = [h["cutoff"] for h in mine]
        color = PALETTE[i % len(PALETTE)]
        fig.add_trace(go.Scatter(x=x + x[::-1], y=[h["seq_ci_rel_high"] for h in mine] +
                                 [h["seq_ci_rel_low"] for h in mine][::-1], fill="toself", opacity=0.15,
                                 line={"width": 0}, fillcolor=color, name=f"{arm} sequential band", hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=x, y=[h["effect_rel"] for h in mine], mode="lines+markers", name=arm,
                                 line={"color": color}, error_y=_err(mine, "effect_rel", "ci_rel_low", "ci_rel_high")))
    fig.add_hline(y=0, line={"color": "#888", "dash": "dot"})
    fig.update_yaxes(tickformat="+.0%", title="primary effect")
    alt = "; ".join(f"{h['arm']} at {h['cutoff'][:10]}: {h['effect_rel']:+.1%}" for h in history
                    if h.get("effect_rel") is not None)
    return _out(_layout(fig, "Primary effect over time, with always-valid bands", 320), "cumulative", alt)


def groups(results: dict[str, Any]) -> dict[str, Any]:
    """Primary effect per customer group, with Cochran's Q in the title."""
    rows = [r for r in results.get("groups", []) if r.get("effect_rel") is not None]
    fig = go.Figure()
    arms = sorted({r["arm"] for r in rows})
    for i, arm in enumerate(arms):
        mine = [r for r in rows if r["arm"] == arm]
        fig.add_trace(go.Scatter(x=[r["effect_rel"] for r in mine], y=[r["group"] for r in mine], mode="markers",
                                 name=arm, marker={"color": PALETTE[i % len(PALETTE)], "size": 9},
                                 error_x=_err(mine, "effect_rel", "ci_rel_low", "ci_rel_high")))
    fig.add_vline(x=0, line={"color": "#888", "dash": "dot"})
    fig.update_xaxes(tickformat="+.0%")
    het = results.get("heterogeneity", {})
    q = ", ".join(f"{a}: Q p = {h['p_value']:.2g}" for a, h in het.items() if h.get("p_value") is not None)
    alt = "; ".join(f"{r['arm']} {r['group']}: {r['effect_rel']:+.1%}" for r in rows)
    return _out(_layout(fig, f"Effect by customer group ({q or 'no test'})", 140 + 26 * len(rows)), "groups", alt)


def weeks(results: dict[str, Any]) -> dict[str, Any]:
    """Effect by week since exposure (a falling line is a novelty effect)."""
    rows = [r for r in results.get("weeks", []) if r.get("ci_low") is not None]
    fig = go.Figure()
    arms = sorted({r["arm"] for r in rows})
    for i, arm in enumerate(arms):
        mine = sorted((r for r in rows if r["arm"] == arm), key=lambda r: r["week"])
        fig.add_trace(go.Scatter(x=[r["week"] for r in mine], y=[r["effect_abs"] for r in mine],
                                 mode="lines+markers", name=arm, line={"color": PALETTE[i % len(PALETTE)]},
                                 error_y=_err(mine, "effect_abs", "ci_low", "ci_high")))
    fig.add_hline(y=0, line={"color": "#888", "dash": "dot"})
    fig.update_xaxes(title="week since exposure", dtick=1)
    trend = results.get("trend", {})
    t = ", ".join(f"{a}: slope {v['slope']:+.2f}/week (p = {v['p_value']:.2g})" for a, v in trend.items()
                  if v.get("slope") is not None)
    alt = "; ".join(f"{r['arm']} week {r['week']}: {r['effect_abs']:+.2f}" for r in rows)
    return _out(_layout(fig, f"Effect by week since exposure ({t or 'no trend test'})", 320), "weeks", alt)


def economics(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per treatment arm: incremental margin − programme cost = net profit per customer."""
    out = []
    for arm, e in results.get("economics", {}).items():
        if e.get("incremental_margin_per_customer") is None:
            continue
        fig = go.Figure(go.Waterfall(
            x=["incremental margin", "programme cost", "net profit"], measure=["relative", "relative", "total"],
            y=[e["incremental_margin_per_customer"], -(e["cost_per_customer"] or 0.0), 0],
            connector={"line": {"color": "#999"}}, increasing={"marker": {"color": "#2a9d8f"}},
            decreasing={"marker": {"color": "#e76f51"}}, totals={"marker": {"color": "#1d3557"}}))
        roi = f"ROI {e['roi']:.0%}" if e.get("roi") is not None else "ROI n/a"
        proj = (f"; next stage: {e['projected_customers']:,} customers, net {e['projected_net_profit']:,.0f}"
                if e.get("projected_net_profit") is not None else "")
        fig.update_yaxes(title="per treated customer")
        alt = (f"{arm}: incremental margin {e['incremental_margin_per_customer']:.2f}, cost "
               f"{e['cost_per_customer']:.2f}, net {e['net_profit_per_customer']:.2f} per customer; {roi}{proj}")
        fig = _layout(fig, f"{arm}: economics per customer ({roi}{proj})", 300)
        fig.update_layout(margin={"l": 60})
        out.append(_out(fig, f"economics_{arm}", alt))
    return out


def store_balance(results: dict[str, Any]) -> dict[str, Any] | None:
    """Store pilots: each store's pre-period spend per day by arm (balance before the start)."""
    rows = results.get("stores", [])
    if not rows:
        return None
    fig = go.Figure()
    arms = sorted({r["arm"] for r in rows})
    for i, arm in enumerate(arms):
        mine = [r for r in rows if r["arm"] == arm]
        fig.add_trace(go.Box(y=[r["pre_spend"] for r in mine], name=arm, boxpoints="all",
                             marker={"color": PALETTE[i % len(PALETTE)]}))
    fig.update_yaxes(title="pre-period spend per day")
    alt = "; ".join(f"{a}: {sum(1 for r in rows if r['arm'] == a)} stores" for a in arms)
    fig = _layout(fig, "Store balance before the start", 320)
    fig.update_layout(margin={"l": 60})
    return _out(fig, "store_balance", alt)


def figures(results: dict[str, Any], history: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Every figure of a report, in reading order."""
    out = [effects(results), effects_absolute(results)]
    if history:
        out.append(cumulative(history))
    if results.get("groups"):
        out.append(groups(results))
    if results.get("weeks"):
        out.append(weeks(results))
    out += economics(results)
    balance = store_balance(results)
    if balance:
        out.append(balance)
    return out
