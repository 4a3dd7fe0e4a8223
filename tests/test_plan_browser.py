"""The Plan step in a real browser (Playwright with Debian's chromium): from the draft's form "Plan this
pilot" shows the plan of what the form holds; a running store pilot's plan proposes stores and applies
one to the next stage. Screenshots at 1366 px and 390 px land in test-artifacts/plan-*.png."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from pilot.auth import CLI
from pilot.db import db, utcnow
from pilot.programmes import get_programme
from pilot.rollout import create_pilot, get_pilot
from tests.factories import serving
from tests.test_plan_pages import ALL, _running_store_pilot
from tests.test_planner import _retailer

ARTIFACTS = Path("test-artifacts")


@pytest.fixture
def site(app, backend, tokens):
    if backend[0] != "sqlite":
        pytest.skip("pages are checked once, on SQLite; the database layer is covered on both elsewhere")
    _retailer(app, stores=14, customers=900, weeks=40, seed=6, end=utcnow())
    with app.app_context():
        create_pilot(db.session, CLI.actor, get_programme(db.session, "loyalty"), {
            "key": "draft", "name": "Spring card", "unit": "customer", "primary_metric": "spend_per_customer",
            "mde": 0.02, "stages": [{"name": "Two regions", "region_codes": ALL[:2],
                                     "allocation": {"control": 0.5, "bonus": 0.5}}]})
        db.session.commit()
    _running_store_pilot(app, stages=2)
    with serving(app) as url:
        yield url


def _page(browser, url: str, token: str, width: int):
    context = browser.new_context(viewport={"width": width, "height": 900 if width > 500 else 844})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url + "/login")
    page.fill("#token", token)
    page.click("form:has(#token) button[type=submit]")
    return page, errors


@pytest.mark.parametrize("width", [1366, 390])
def test_the_plan_step_in_the_browser(app, browser, site, tokens, width):
    ARTIFACTS.mkdir(exist_ok=True)
    suffix = "" if width > 500 else "-narrow"
    page, errors = _page(browser, site, tokens["manager"], width)
    page.goto(site + "/pilots/draft/edit")
    page.select_option("#primary_metric", "conversion")  # an edit not saved: the plan is of what the form holds
    page.click("text=Plan this pilot")
    page.wait_for_selector("h1:has-text('Plan: Spring card')")
    assert page.locator("text=two-proportion z-test").count() == 1
    assert page.locator("section[aria-label='Power curve'] th.table-primary").inner_text() == "8"
    assert page.locator("text=nothing was saved").is_visible()
    page.screenshot(path=str(ARTIFACTS / f"plan-form{suffix}.png"), full_page=True)
    started = time.perf_counter()
    page.goto(site + "/pilots/stores/plan?stores=6", timeout=240_000)  # a store plan and six-store designs
    print("store plan page", round(time.perf_counter() - started, 1), "s")
    page.wait_for_selector("text=Apply to stage 2")
    assert page.locator("section[aria-label='Verdict']").inner_text().startswith("Underpowered")
    page.screenshot(path=str(ARTIFACTS / f"plan-stores{suffix}.png"), full_page=True)
    with page.expect_navigation(timeout=240_000):  # the applied design's page is planned again
        page.locator("button:has-text('Apply to stage 2')").first.click()
    page.wait_for_selector("text=Stage 2 now starts in 6 stores")
    page.screenshot(path=str(ARTIFACTS / f"plan-applied{suffix}.png"), full_page=True)
    assert not errors, errors
    with app.app_context():
        pilot = get_pilot(db.session, "stores")
        assert len(pilot.stage(2).store_codes) == 6 and pilot.stage(1).region_codes == ALL[:2]
        assert get_pilot(db.session, "draft").primary_metric == "spend_per_customer"
