"""The metrics page and form: built-in and defined metrics in plain words; define and change one in a form
(every error at once, by field); read-only with the reason while a live pilot measures it; in a real browser."""
from __future__ import annotations

from pathlib import Path

import pytest

from pilot import metric_definitions as md
from pilot.db import db
from tests.factories import CHROMIUM, csrf, login, pilot_body, serving

ARTIFACTS = Path("test-artifacts")


def test_the_list_names_every_metric_in_plain_words(client, tokens):
    login(client, tokens["analyst"])
    page = client.get("/metrics").get_data(as_text=True)
    for key in ("spend_per_customer", "conversion", "nps", "refund_rate", "complaint_resolution_rate"):
        assert f'data-key="{key}"' in page
    assert "Share of customers with ‘survey_nps’ events with a value of at least 9." in page
    assert "Over each arm: the number of refunds ÷ the number of sales" in page
    assert "New metric" not in page  # an analyst reads
    assert client.get("/metrics/new").status_code == 403


def test_define_a_ratio_in_the_form_errors_first(app, client, tokens):
    login(client, tokens["manager"])
    form = {"csrf_token": csrf(client, "/metrics/new"), "key": "Bad Key", "name": "", "kind": "ratio",
            "good_direction": "up", "numerator.source": "events", "numerator.aggregation": "sum",
            "denominator.source": "transactions", "denominator.aggregation": "count",
            "denominator.filters": "type=gift"}
    bad = client.post("/metrics/new", data=form)
    assert bad.status_code == 422
    page = bad.get_data(as_text=True)
    for path in ("key", "name", "numerator.type", "numerator.field", "denominator.filters.type"):
        assert f"({path})" in page, path
    form.update({"key": "reviews_per_visit", "name": "Reviews per visit", "numerator.type": "review",
                 "numerator.aggregation": "count", "denominator.filters": "type=sale"})
    ok = client.post("/metrics/new", data=form)
    assert ok.status_code == 302, ok.get_data(as_text=True)[:2000]
    with app.app_context():
        saved = md.current(db.session, "reviews_per_visit")
        assert (saved.kind, saved.numerator.type, saved.denominator.filters) == ("ratio", "review", {"type": "sale"})
    edit = client.get("/metrics/reviews_per_visit").get_data(as_text=True)
    assert 'value="review"' in edit and "type=sale" in edit
    form.update({"csrf_token": csrf(client, "/metrics/reviews_per_visit"), "covariate": "on"})
    assert client.post("/metrics/reviews_per_visit", data=form).status_code == 302
    with app.app_context():
        assert md.current(db.session, "reviews_per_visit").version == 2


def test_a_metric_a_live_pilot_measures_is_read_only_with_the_reason(client, world, tokens):
    client.post("/api/v1/pilots", json=pilot_body(primary_metric="nps"), headers=world)
    client.post("/api/v1/pilots/p1/start", json={}, headers=world)
    login(client, tokens["manager"])
    page = client.get("/metrics/nps").get_data(as_text=True)
    assert 'id="locked"' in page and "live pilots measure it (p1)" in page and "<fieldset disabled>" in page
    refused = client.post("/metrics/nps", data={"csrf_token": csrf(client, "/metrics/nps"), "name": "Changed",
                                                "kind": "mean", "good_direction": "up"})
    assert refused.status_code == 200 and 'id="locked"' in refused.get_data(as_text=True)
    assert "in use by p1" in client.get("/metrics").get_data(as_text=True)


@pytest.mark.skipif(not CHROMIUM, reason="no Chromium found: install Debian's chromium package")
def test_the_form_in_a_browser(app, backend, browser, client, world, tokens):
    if backend[0] != "sqlite":
        pytest.skip("pages are checked once, on SQLite; the database layer is covered on both elsewhere")
    client.post("/api/v1/pilots", json=pilot_body(primary_metric="nps"), headers=world)
    client.post("/api/v1/pilots/p1/start", json={}, headers=world)
    ARTIFACTS.mkdir(exist_ok=True)
    with serving(app) as url:
        context = browser.new_context(viewport={"width": 1366, "height": 900})
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url + "/login")
        page.fill("#token", tokens["manager"])
        page.click("form:has(#token) button[type=submit]")
        page.click("nav >> text=Metrics")
        page.screenshot(path=str(ARTIFACTS / "metrics-list.png"), full_page=True)
        page.click("text=New metric")
        assert page.locator("#part-measure").is_visible() and not page.locator("#part-numerator").is_visible()
        page.select_option("#kind", "ratio")
        assert not page.locator("#part-measure").is_visible() and page.locator("#part-denominator").is_visible()
        page.fill("#key", "resolved_per_referral")
        page.fill("#name", "Complaints resolved per referral")
        page.fill("[id='numerator.type']", "complaint_resolved")
        page.fill("[id='denominator.type']", "referral")
        page.screenshot(path=str(ARTIFACTS / "metric-form.png"), full_page=True)
        page.click("#metric-form button[type=submit]")
        page.wait_for_selector("[data-key='resolved_per_referral']")
        assert "Complaints resolved per referral" in page.inner_text("#defined-metrics")
        page.goto(url + "/metrics/nps")
        assert "live pilots measure it (p1)" in page.inner_text("#locked")
        assert page.locator("#name").is_disabled()
        page.screenshot(path=str(ARTIFACTS / "metric-locked.png"), full_page=True)
        context.close()
    assert errors == []
