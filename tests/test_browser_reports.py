"""The analyst report in a real browser (Playwright, Debian's chromium): figures drawn as meant, no
horizontal overflow at 1366 px or 390 px, the drill-down, and the PDF. Screenshots go to test-artifacts/."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from pilot.simulate import BONUS, CONTROL, DISCOUNT10
from reports.figures import PALETTE
from tests.factories import plant, run_analysis, serving

ARTIFACTS = Path("test-artifacts")


@pytest.fixture
def report_site(app, backend, tokens):
    """A real HTTP server with a three-arm pilot analysed once (one look: the time figure's one point)."""
    if backend[0] != "sqlite":
        pytest.skip("pages are checked once, on SQLite; the database layer is covered on both elsewhere")
    key = plant(app, "clear_win", customers=1000, stores=10, variants=[CONTROL, BONUS, DISCOUNT10],
                allocation={"control": 0.34, "bonus": 0.33, "discount10": 0.33},
                effects={"bonus": {"*": {"visits": 0.10}}, "discount10": {"*": {"visits": 0.05}}})
    run_id = run_analysis(app, key).id
    with serving(app) as url:
        yield {"url": url, "run": run_id, "tokens": tokens}


def open_report(browser, site, width: int, height: int = 900, query: str = ""):
    """A logged-in analyst's page at `width` px showing the report; every console message is kept."""
    context = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True)
    context.set_default_timeout(120_000)  # plotly.js draws every figure before `load`: slow on a busy machine
    page = context.new_page()
    page.messages = []
    page.on("console", lambda m: page.messages.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: page.messages.append(f"pageerror: {e}"))
    page.goto(site["url"] + "/login")
    page.fill("#token", site["tokens"]["analyst"])
    with page.expect_navigation():
        page.press("#token", "Enter")  # the token's own form (the page may offer other ways in)
    page.goto(f"{site['url']}/analyses/{site['run']}{query}")
    page.wait_for_selector("#fig-weeks .main-svg")
    return page


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def title(page, fig: str) -> str:
    """A figure's title as read, its lines joined (a long one is drawn on two)."""
    return page.evaluate("id => { const t = document.querySelector('#' + id + ' .gtitle'); const lines = "
                         "t.querySelectorAll('tspan.line'); return lines.length ? Array.from(lines).map("
                         "l => l.textContent).join(' ') : t.textContent; }", fig)


def rgb(hex_colour: str) -> str:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


ERROR_BARS = """id => Array.from(document.querySelectorAll('#' + id + ' .scatterlayer .trace')).map(t => ({
  bars: Array.from(t.querySelectorAll('.errorbar path')).map(p => getComputedStyle(p).stroke),
  points: Array.from(t.querySelectorAll('path.point')).map(p => getComputedStyle(p).fill)}))"""
LINES = """el => { const r = document.createRange(); r.selectNodeContents(el);
  return new Set(Array.from(r.getClientRects()).map(x => Math.round(x.top))).size; }"""
TITLE_FITS = """id => { const svg = document.querySelector('#' + id + ' .main-svg').getBoundingClientRect();
  const t = document.querySelector('#' + id + ' .gtitle').getBoundingClientRect();
  return t.width > 0 && t.left >= svg.left && t.right <= svg.right; }"""


def test_report_figures_and_tables_fit_and_read_right(browser, report_site):
    page = open_report(browser, report_site, 1366)
    shot(page, "report-1366")
    # error bars take their arm's colour (one colour per arm, as the points), not black
    arms = {rgb(PALETTE[0]), rgb(PALETTE[1])}
    for fig in ("fig-effects", "fig-effects_absolute", "fig-groups"):
        traces = [t for t in page.evaluate(ERROR_BARS, fig) if t["bars"]]
        assert traces, fig
        for t in traces:
            assert set(t["bars"]) == set(t["points"]) and len(set(t["bars"])) == 1, (fig, t)
        assert {t["bars"][0] for t in traces} == arms, fig
    symbols = page.evaluate("document.getElementById('fig-effects').data.map(t => t.marker.symbol)")
    assert len(set(symbols)) == len(symbols) == 2  # and a shape per arm, where colour is not seen
    assert not [m for m in page.messages if "Invalid color" in m or m.startswith(("error", "pageerror"))]
    # one analysis: the time axis is a date axis showing days, not milliseconds around one instant
    axis = page.evaluate("document.getElementById('fig-cumulative')._fullLayout.xaxis.type")
    ticks = page.locator("#fig-cumulative .xtick text").all_text_contents()
    assert axis == "date" and ticks and all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", t) for t in ticks), ticks
    # the weekly chart names its y-axis, and no figure's title is cut off
    assert page.locator("#fig-weeks .g-ytitle").text_content() == "Δ spend per customer-week"
    for fig in page.locator(".plot").all():
        assert page.evaluate(TITLE_FITS, fig.get_attribute("id")), fig.get_attribute("id")
        assert fig.get_attribute("aria-label")  # every figure has its text alternative
    assert page.locator("details.alt").count() == page.locator(".plot").count()
    # at 1366 px nothing scrolls sideways, no table is clipped and no interval wraps
    assert page.evaluate("document.documentElement.scrollWidth") <= 1366
    for box in page.locator(".scroll").all():
        assert box.evaluate("b => b.scrollWidth <= b.clientWidth + 1"), box.inner_text()[:80]
    cells = page.locator("td.ci").all()
    assert cells and all(c.evaluate(LINES) == 1 for c in cells)
    assert "Sample-ratio check: passed" in page.locator("#trust-srm").inner_text()
    phone = open_report(browser, report_site, 390, 844)
    shot(phone, "report-390")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    for fig in phone.locator(".plot").all():
        assert phone.evaluate(TITLE_FITS, fig.get_attribute("id")), fig.get_attribute("id")
    # the longest metric name's drill-down titles fit a phone too
    phone = open_report(browser, report_site, 390, 844, "?metric=discount_cost_per_customer")
    shot(phone, "report-390-drill")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    for fig in ("fig-groups", "fig-weeks"):
        assert phone.evaluate(TITLE_FITS, fig), fig
    assert not [m for m in phone.messages if "Invalid color" in m or m.startswith(("error", "pageerror"))]


def test_drill_down_picks_a_metric_and_the_report_prints_to_pdf(browser, report_site):
    page = open_report(browser, report_site, 1366)
    page.select_option("#metric", "visits_per_customer")
    page.click("form.pick button")
    page.wait_for_selector("#fig-groups .main-svg")
    assert "metric=visits_per_customer" in page.url
    assert title(page, "fig-groups") == "visits_per_customer by customer group"
    assert page.locator("#groups-table tbody tr").count() >= 2 * 4  # two arms × the groups
    # the weeks follow the chosen metric too: its figure and its table (two arms × the weeks)
    assert title(page, "fig-weeks") == "visits_per_customer by week since exposure"
    assert page.locator("#fig-weeks .g-ytitle").text_content() == "Δ visits per customer-week"
    weeks = page.evaluate("document.getElementById('fig-weeks').data.map(t => t.x.length)")
    assert len(weeks) == 2 and page.locator("#weeks-table tbody tr").count() == sum(weeks) >= 2 * 3
    shot(page, "report-drill")
    page.emulate_media(media="print")
    shot(page, "report-print")
    pdf = page.request.get(f"{report_site['url']}/analyses/{report_site['run']}/report.pdf")
    assert pdf.status == 200 and pdf.headers["content-type"] == "application/pdf"
    body = pdf.body()
    assert body.startswith(b"%PDF") and len(body) > 50_000  # the figures are drawn into it
    assert not [m for m in page.messages if m.startswith(("error", "pageerror"))]
