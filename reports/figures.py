"""plotly figures of an analysis run, as JSON-ready dicts (data + layout), small enough to inline.

Figures are written as plotly.js's own JSON (traces and layout as plain dicts): building them through
plotly's Python figure objects validated every property and cost ~300 ms per report. They use no
template (plotly's default template alone is ~8 KB per figure). Arms keep one colour and one marker
shape in every figure, from the Okabe–Ito palette (told apart by readers with any common
colour-vision deficiency, and by shape where colour fails); each figure carries a short title, a
caption with its tests, and an alt text that lists its numbers for screen readers.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import plotly

# Okabe & Ito (2008), "Color Universal Design": blue, vermillion, bluish green, reddish purple, orange, sky blue
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")
SYMBOLS = ("circle", "square", "diamond", "triangle-up", "cross", "x")
FONT = {"family": "system-ui, sans-serif", "size": 12}
ZERO = {"color": "#888", "dash": "dot", "width": 1}
Style = dict[str, str]


def plotly_js_path() -> Path:
    """The plotly.js bundled with the plotly package (served by the app: no CDN)."""
    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def arm_styles(results: dict[str, Any]) -> dict[str, Style]:
    """Each treatment arm's colour and marker shape, the same in every figure of a report."""
    arms = [a["variant"] for a in results.get("arms", []) if a.get("role") != "control"]
    arms += sorted({r["arm"] for r in results.get("metrics", [])} - set(arms))
    return {a: {"color": PALETTE[i % len(PALETTE)], "symbol": SYMBOLS[i % len(SYMBOLS)]} for i, a in enumerate(arms)}


def _figure(key: str, title: str, height: int, data: list[dict[str, Any]], alt: str, caption: str,
            left: int = 150, **layout: Any) -> dict[str, Any]:
    base = {"title": {"text": title, "x": 0, "xref": "container", "font": {"size": 15}}, "font": FONT,
            "height": height, "margin": {"l": left, "r": 20, "t": 50 + 20 * title.count("<br>"), "b": 84},
            "plot_bgcolor": "#fff",
            "paper_bgcolor": "#fff", "scattermode": "group", "scattergap": 0.5,
            "legend": {"orientation": "h", "yref": "container", "y": 0, "yanchor": "bottom", "x": 0}}
    return {"key": key, "alt": alt, "caption": caption, "data": data, "layout": {**base, **layout}}


def _titled(metric: str, what: str) -> str:
    """A drill-down figure's title: on two lines when a long metric name would not fit a phone (plotly
    does not wrap titles)."""
    return f"{metric} {what}" if len(metric) + len(what) < 37 else f"{metric}<br>{what}"


def _axis(title: str | None = None, **more: Any) -> dict[str, Any]:
    return {**({"title": {"text": title}} if title else {}), "automargin": True, "gridcolor": "#eee",
            "zeroline": False, **more}


def _bars(rows: list[dict], value: str, low: str, high: str, color: str) -> dict[str, Any]:
    """Asymmetric error bars from a row's value and interval, in one colour (plotly takes no colour array)."""
    def gap(r: dict, a: str, b: str) -> float | None:
        return r[a] - r[b] if r.get(a) is not None and r.get(b) is not None else None
    return {"type": "data", "symmetric": False, "array": [gap(r, high, value) for r in rows],
            "arrayminus": [gap(r, value, low) for r in rows], "color": color, "thickness": 1.5}


def _marker(style: Style) -> dict[str, Any]:
    return {"color": style["color"], "symbol": style["symbol"], "size": 9}


def _points(rows: list[dict], arm: str, style: Style, x: str, y: list, low: str, high: str,
            **more: Any) -> dict[str, Any]:
    """One arm's effects as points with horizontal CI bars, on a categorical y axis."""
    return {"type": "scatter", "mode": "markers", "orientation": "h", "name": arm, "x": [r[x] for r in rows],
            "y": y, "marker": _marker(style), "error_x": _bars(rows, x, low, high, style["color"]), **more}


def _vline() -> dict[str, Any]:
    return {"type": "line", "xref": "x", "x0": 0, "x1": 0, "yref": "paper", "y0": 0, "y1": 1, "line": ZERO}


def _hline() -> dict[str, Any]:
    return {"type": "line", "yref": "y", "y0": 0, "y1": 0, "xref": "paper", "x0": 0, "x1": 1, "line": ZERO}


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v:+.1%}"


def effects(results: dict[str, Any]) -> dict[str, Any]:
    """Relative effect with its CI per arm × metric."""
    rows = [r for r in results.get("metrics", []) if r.get("effect_rel") is not None]
    styles = arm_styles(results)
    data = []
    for arm in [a for a in styles if any(r["arm"] == a for r in rows)]:
        mine = [r for r in rows if r["arm"] == arm]
        label = [f"{r['metric']} ({r['method']})" if results.get("unit") == "store" else r["metric"] for r in mine]
        data.append(_points(mine, arm, styles[arm], "effect_rel", label, "ci_rel_low", "ci_rel_high",
                            hovertemplate="%{y}: %{x:+.1%}<extra>" + arm + "</extra>"))
    alt = "; ".join(f"{r['arm']} {r['metric']}: {r['effect_rel']:+.1%} ({_pct(r.get('ci_rel_low'))} to "
                    f"{_pct(r.get('ci_rel_high'))})" for r in rows)
    return _figure("effects", "Effects by arm and metric", 150 + 28 * len(rows), data, alt,
                   "Relative effect of each arm on each metric against control, with its 95% confidence interval.",
                   xaxis=_axis("relative effect vs control (95% CI)", tickformat="+.0%"),
                   yaxis=_axis(autorange="reversed"), shapes=[_vline()])


def effects_absolute(results: dict[str, Any]) -> dict[str, Any]:
    """Absolute effects with CIs, one small panel per metric (units differ); one trace per arm and
    panel, so that each arm's error bars take its colour."""
    rows = [r for r in results.get("metrics", []) if r.get("ci_low") is not None]
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    styles = arm_styles(results)
    n, gap = max(len(metrics), 1), 0.08
    step = (1 - gap * (n - 1)) / n
    data, axes, notes = [], {}, []
    for i, metric in enumerate(metrics):
        top = 1 - i * (step + gap)
        suffix = "" if i == 0 else str(i + 1)
        axes[f"xaxis{suffix}"] = _axis(anchor=f"y{suffix}", domain=[0, 1], zeroline=True, zerolinecolor="#888")
        axes[f"yaxis{suffix}"] = _axis(anchor=f"x{suffix}", domain=[max(top - step, 0), top], autorange="reversed")
        notes.append({"text": metric, "x": 0.5, "xref": "paper", "y": top, "yref": "paper", "xanchor": "center",
                      "yanchor": "bottom", "showarrow": False, "font": {"size": 13}})
        for arm in styles:
            mine = [r for r in rows if r["metric"] == metric and r["arm"] == arm]
            if mine:
                data.append(_points(mine, arm, styles[arm], "effect_abs", [arm], "ci_low", "ci_high",
                                    xaxis=f"x{suffix}", yaxis=f"y{suffix}", legendgroup=arm, showlegend=False))
    alt = "; ".join(f"{r['arm']} {r['metric']}: {r['effect_abs']:+.3g} ({r['ci_low']:+.3g} to {r['ci_high']:+.3g})"
                    for r in rows)
    return _figure("effects_absolute", "Absolute effects (95% CI)", 90 + 100 * len(metrics), data, alt,
                   "Absolute effect of each arm in each metric's own unit, with 95% CI.", annotations=notes,
                   showlegend=False, **axes)


def _date_range(cutoffs: list[str]) -> list[str] | None:
    """With one run, a date axis around it (plotly would zoom to milliseconds around one point)."""
    if len(set(cutoffs)) != 1:
        return None
    at = datetime.fromisoformat(cutoffs[0])
    return [(at - timedelta(days=3)).isoformat(), (at + timedelta(days=3)).isoformat()]


def cumulative(history: list[dict[str, Any]], styles: dict[str, Style] | None = None) -> dict[str, Any]:
    """Primary effect over successive runs with the fixed and the always-valid (sequential) bands."""
    styles = styles or {}
    arms = [a for a in styles if any(h["arm"] == a for h in history)]
    arms += sorted({h["arm"] for h in history} - set(arms))
    data = []
    for i, arm in enumerate(arms):
        mine = sorted((h for h in history if h["arm"] == arm), key=lambda h: h["cutoff"])
        style = styles.get(arm) or {"color": PALETTE[i % len(PALETTE)], "symbol": "circle"}
        x = [h["cutoff"] for h in mine]
        high, low = [h["seq_ci_rel_high"] for h in mine], [h["seq_ci_rel_low"] for h in mine]
        if len(mine) == 1:  # one look: the band is a bar (a filled area of one point has no width)
            band = {"x": x * 2, "y": [low[0], high[0]], "mode": "lines", "opacity": 0.25,
                    "line": {"width": 12, "color": style["color"]}}
        else:
            band = {"x": x + x[::-1], "y": high + low[::-1], "fill": "toself", "opacity": 0.15, "line": {"width": 0},
                    "fillcolor": style["color"], "mode": "lines"}
        data.append({"type": "scatter", "name": f"{arm} always-valid band", "hoverinfo": "skip", **band})
        data.append({"type": "scatter", "x": x, "y": [h["effect_rel"] for h in mine], "mode": "lines+markers",
                     "name": arm, "line": {"color": style["color"]}, "marker": _marker(style),
                     "error_y": _bars(mine, "effect_rel", "ci_rel_low", "ci_rel_high", style["color"])})
    alt = "; ".join(f"{h['arm']} at {h['cutoff'][:10]}: {h['effect_rel']:+.1%} (always-valid "
                    f"{_pct(h.get('seq_ci_rel_low'))} to {_pct(h.get('seq_ci_rel_high'))})" for h in history
                    if h.get("effect_rel") is not None)
    looks = len({h["cutoff"] for h in history})
    caption = (f"Primary effect at each of the stage's {looks} analyses so far, with its 95% CI and the "
               "always-valid (sequential) band that stays valid however often the pilot is looked at.")
    xaxis = _axis(type="date", tickformat="%Y-%m-%d", **({"range": r} if (r := _date_range(
        [h["cutoff"] for h in history])) else {}))
    return _figure("cumulative", "Primary effect over time", 320, data, alt, caption, left=80, xaxis=xaxis,
                   yaxis=_axis("primary effect", tickformat="+.0%"), shapes=[_hline()])


def metric_rows(results: dict[str, Any], table: str, metric: str | None) -> list[dict[str, Any]]:
    """The rows of `groups` (or `weeks`) of one metric: the primary metric's, or another's from the
    drill-down tables (`metric_groups`)."""
    rows = results.get(table, []) + (results.get("metric_groups", []) if table == "groups" else [])
    metric = metric or (rows[0]["metric"] if rows else None)
    return [r for r in rows if r.get("metric") == metric]


def heterogeneity_rows(results: dict[str, Any], metric: str) -> list[dict[str, Any]]:
    """Cochran's Q per arm for one metric (the primary's in `heterogeneity`, others' in `metric_heterogeneity`)."""
    if [r["metric"] for r in results.get("groups", [])[:1]] == [metric]:
        return [{"arm": a, **h} for a, h in results.get("heterogeneity", {}).items()]
    return [h for h in results.get("metric_heterogeneity", []) if h.get("metric") == metric]


def groups(results: dict[str, Any], metric: str | None = None) -> dict[str, Any]:
    """A metric's relative effect per customer group, with Cochran's Q in the caption."""
    rows = [r for r in metric_rows(results, "groups", metric) if r.get("effect_rel") is not None]
    styles = arm_styles(results)
    data = [_points(mine, arm, styles[arm], "effect_rel", [r["group"] for r in mine], "ci_rel_low", "ci_rel_high")
            for arm in styles if (mine := [r for r in rows if r["arm"] == arm])]
    name = rows[0]["metric"] if rows else (metric or "")
    q = ", ".join(f"{h['arm']}: Cochran's Q p = {h['p_value']:.2g}" for h in heterogeneity_rows(results, name)
                  if h.get("p_value") is not None)
    alt = "; ".join(f"{r['arm']} {r['group']}: {r['effect_rel']:+.1%} ({_pct(r['ci_rel_low'])} to "
                    f"{_pct(r['ci_rel_high'])})" for r in rows)
    return _figure("groups", _titled(name, "by customer group"), 190 + 26 * len(rows), data, alt,
                   f"Effect on {name} by customer group ({q or 'no heterogeneity test'}).",
                   xaxis=_axis("relative effect vs control (95% CI)", tickformat="+.0%"),
                   yaxis=_axis(autorange="reversed"), shapes=[_vline()])


def week_rows(results: dict[str, Any], metric: str | None = None) -> list[dict[str, Any]]:
    """One metric's effect per week since exposure (`metric_weeks`, default the primary); a run from
    before every metric had its weeks: the fading test's weekly table (`weeks`), for the primary."""
    primary = next((r["metric"] for r in results.get("metrics", []) if r.get("role") == "primary"), None)
    metric = metric or primary
    rows = [r for r in results.get("metric_weeks", []) if r.get("metric") == metric]
    return rows or (results.get("weeks", []) if metric == primary and "metric_weeks" not in results else [])


def _week_axis(metric: str, kind: str | None) -> str:
    if kind == "proportion":
        return f"Δ {metric} (share of customers, in the week)"
    if kind == "ratio":
        return f"Δ {metric} (in the week)"
    return f"Δ {metric.removesuffix('_week').removesuffix('_per_customer')} per customer-week"


def weeks(results: dict[str, Any], metric: str | None = None) -> dict[str, Any]:
    """A metric's effect by week since exposure (default the primary's; a falling line is a novelty effect)."""
    rows = [r for r in week_rows(results, metric) if r.get("ci_low") is not None]
    styles = arm_styles(results)
    data = []
    for arm in styles:
        mine = sorted((r for r in rows if r["arm"] == arm), key=lambda r: r["week"])
        if mine:
            data.append({"type": "scatter", "x": [r["week"] for r in mine], "y": [r["effect_abs"] for r in mine],
                         "mode": "lines+markers", "name": arm, "line": {"color": styles[arm]["color"]},
                         "marker": _marker(styles[arm]),
                         "error_y": _bars(mine, "effect_abs", "ci_low", "ci_high", styles[arm]["color"])})
    metric = rows[0]["metric"] if rows else (metric or "value_per_customer_week")
    trend = results.get("trend", {})
    followed = next((w["metric"] for w in results.get("weeks", [])), None)
    t = ", ".join(f"{a}: slope {v['slope']:+.2f}/week (p = {v['p_value']:.2g})" for a, v in trend.items()
                  if v.get("slope") is not None)
    t = f"{t} in {followed}" if t and followed and followed != metric else t
    alt = "; ".join(f"{r['arm']} week {r['week']}: {r['effect_abs']:+.3g} ({r['ci_low']:+.3g} to {r['ci_high']:+.3g})"
                    for r in rows)
    kind = rows[0].get("kind") if rows else None
    return _figure("weeks", _titled(metric, "by week since exposure"), 340, data, alt,
                   f"Absolute effect on {metric} in each week since exposure, 95% CI; trend: "
                   f"{t or 'no trend test'} (a falling line is a novelty effect).", left=80,
                   xaxis=_axis("week since exposure", dtick=1), yaxis=_axis(_week_axis(metric, kind)),
                   shapes=[_hline()])


def economics(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per treatment arm: incremental margin − programme cost = net profit per customer."""
    out = []
    for arm, e in results.get("economics", {}).items():
        if e.get("incremental_margin_per_customer") is None:
            continue
        waterfall = {"type": "waterfall", "x": ["incremental margin", "programme cost", "net profit"],
                     "measure": ["relative", "relative", "total"],
                     "y": [e["incremental_margin_per_customer"], -(e["cost_per_customer"] or 0.0), 0],
                     "connector": {"line": {"color": "#999"}}, "increasing": {"marker": {"color": PALETTE[2]}},
                     "decreasing": {"marker": {"color": PALETTE[1]}}, "totals": {"marker": {"color": PALETTE[0]}}}
        roi = f"ROI {e['roi']:.0%}" if e.get("roi") is not None else "ROI n/a"
        proj = (f"; next stage: {e['projected_customers']:,} customers, net {e['projected_net_profit']:,.0f}"
                if e.get("projected_net_profit") is not None else "")
        alt = (f"{arm}: incremental margin {e['incremental_margin_per_customer']:.2f}, cost "
               f"{e['cost_per_customer']:.2f}, net {e['net_profit_per_customer']:.2f} per customer; {roi}{proj}")
        out.append(_figure(f"economics_{arm}", f"{arm}: economics per customer", 300, [waterfall], alt,
                           f"{arm}: incremental margin − programme cost = net profit per treated customer "
                           f"({roi}{proj}).", left=60, showlegend=False, xaxis=_axis(),
                           yaxis=_axis("per treated customer")))
    return out


def store_balance(results: dict[str, Any]) -> dict[str, Any] | None:
    """Store pilots: each store's pre-period spend per day by arm (balance before the start)."""
    rows = results.get("stores", [])
    if not rows:
        return None
    arms = [a["variant"] for a in results.get("arms", [])] or sorted({r["arm"] for r in rows})
    data = [{"type": "box", "y": [r["pre_spend"] for r in rows if r["arm"] == arm], "name": arm, "boxpoints": "all",
             "marker": {"color": "#555" if i == 0 else PALETTE[(i - 1) % len(PALETTE)]}} for i, arm in enumerate(arms)]
    alt = "; ".join(f"{a}: {sum(1 for r in rows if r['arm'] == a)} stores" for a in arms)
    return _figure("store_balance", "Store balance before the start", 320, data, alt,
                   "Each store's pre-period spend per day, by arm: arms alike before the start make the comparison "
                   "fair.", left=60, xaxis=_axis(), yaxis=_axis("pre-period spend per day"))


def figures(results: dict[str, Any], history: list[dict[str, Any]] | None = None,
            metric: str | None = None) -> list[dict[str, Any]]:
    """Every figure of a report, in reading order; the customer groups of `metric` (default: the primary)."""
    out = [effects(results), effects_absolute(results)]
    if history:
        out.append(cumulative(history, arm_styles(results)))
    if metric_rows(results, "groups", metric):
        out.append(groups(results, metric))
    if week_rows(results, metric):
        out.append(weeks(results, metric))
    out += economics(results)
    balance = store_balance(results)
    if balance:
        out.append(balance)
    return out
