"""Pages in a real browser: Playwright driving Debian's chromium against a real server.

Skipped, with the reason shown, where no Chromium is installed; `.ci/run` installs it so CI always
runs these. Screenshots of each page land in test-artifacts/.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.factories import CHROMIUM, plant, run_analysis, serving

ARTIFACTS = Path("test-artifacts")
pytestmark = pytest.mark.skipif(not CHROMIUM, reason="no Chromium found: install Debian's chromium package "
                                                      "(`apt-get install chromium`) to run the browser tests")


@pytest.fixture
def site(app, backend, tokens):
    """A real HTTP server on the test database, with a simulated pilot and one analysis."""
    if backend[0] != "sqlite":
        pytest.skip("pages are checked once, on SQLite; the database layer is covered on both elsewhere")
    key = plant(app, "clear_win", customers=1500, stores=10)
    app.config["GATE_FRESHNESS_HOURS"] = 24 * 365  # the simulated retailer's data ends at NOW (the gate's freshness)
    run_id = run_analysis(app, key).id
    with serving(app) as url:
        yield {"url": url, "pilot": key, "run": run_id, "tokens": tokens}


class Session:
    """One logged-in browser page that records console errors."""

    def __init__(self, browser, site, role: str, phone: bool = False) -> None:
        viewport = {"width": 390, "height": 844} if phone else {"width": 1280, "height": 900}
        self.context = browser.new_context(viewport=viewport, accept_downloads=True)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.url = site["url"]
        self.page.goto(self.url + "/login")
        self.page.fill("#token", site["tokens"][role])
        self.page.click("form:has(#token) button[type=submit]")

    def open(self, path: str, shot: str | None = None):
        response = self.page.goto(self.url + path)
        if shot:
            ARTIFACTS.mkdir(exist_ok=True)
            self.page.screenshot(path=str(ARTIFACTS / f"{shot}.png"), full_page=True)
        return response


def test_every_page_loads_without_console_errors_and_figures_render(browser, site):
    s = Session(browser, site, "analyst")
    for path, name in (("/", "overview"), ("/pilots", "dashboard"), (f"/pilots/{site['pilot']}", "pilot"),
                       ("/stores/S001", "store")):
        assert s.open(path, name).status == 200, path
    s.open(f"/analyses/{site['run']}")
    s.page.wait_for_selector("#fig-effects .main-svg")
    assert s.page.locator(".plot .main-svg").count() >= 5
    s.open(f"/analyses/{site['run']}", "report")
    assert s.page.locator("script[src$='plotly.min.js']").count() == 1
    assert s.page.locator("h2#rec-title").inner_text().startswith("Recommendation: advance")
    for alt in s.page.locator(".plot").all():
        assert alt.get_attribute("aria-label")
    assert s.errors == []
    phone = Session(browser, site, "analyst", phone=True)
    phone.open(f"/analyses/{site['run']}")
    phone.page.wait_for_selector("#fig-effects .main-svg")
    phone.open(f"/analyses/{site['run']}", "report-phone")
    width = phone.page.evaluate("document.documentElement.scrollWidth")
    assert width <= 400 and phone.errors == []


def test_analyst_goes_from_dashboard_to_report_and_downloads_csv(browser, site):
    s = Session(browser, site, "analyst")
    s.open("/pilots")
    s.page.click("a.decision, a:has(span.decision)")
    s.page.wait_for_selector("#fig-effects .main-svg")
    assert f"/analyses/{site['run']}" in s.page.url
    with s.page.expect_download() as info:
        s.page.locator("li", has_text="metrics").get_by_text("CSV").click()
    path = info.value.path()
    text = Path(path).read_text()
    assert text.startswith("arm,metric,role,kind,method") and "spend_per_customer" in text
    assert s.page.locator("form[action$='/apply']").count() == 0  # analysts do not act
    assert s.errors == []


def test_manager_applies_the_recommendation_and_sees_the_new_state(browser, site):
    s = Session(browser, site, "manager")
    s.open(f"/analyses/{site['run']}")
    s.page.on("dialog", lambda d: d.accept())
    s.page.click("text=Apply recommendation")
    s.page.wait_for_selector("p.notice")
    assert "Applied advance" in s.page.locator("p.notice").inner_text()
    assert "stage 2" in s.page.locator("section.recommendation").inner_text()
    s.open(f"/analyses/{site['run']}", "report-applied")
    assert s.errors == []


def test_a_store_login_cannot_open_analyst_pages(browser, site):
    s = Session(browser, site, "store")
    assert s.page.url.endswith("/store")
    for path in ("/", "/pilots", f"/pilots/{site['pilot']}", f"/analyses/{site['run']}",
                 f"/analyses/{site['run']}/tables/metrics.csv"):
        assert s.open(path).status == 403, path
    assert s.open("/store", "store-own").status == 200


def test_api_docs_render_under_the_security_headers(browser, site):
    """Swagger UI runs inline scripts and loads its own assets: the headers every answer carries
    (frame-ancestors, nosniff) must leave it working."""
    s = Session(browser, site, "analyst")
    s.page.route("**/favicon.ico", lambda route: route.fulfill(status=204))  # Swagger UI's page names none
    response = s.open("/api/docs")
    assert response.headers["x-content-type-options"] == "nosniff"
    s.page.wait_for_selector(".swagger-ui .opblock-summary")
    s.open("/api/docs", "api-docs")
    assert s.page.locator(".opblock-summary").count() > 20 and s.errors == []
