"""The seed scenario done in the browser only (Playwright with Debian's chromium): a programme with a control,
a 5% card and silver/gold/platinum tiers; the groups young parents and singles with their preview counts; a
two-stage pilot whose first, wrong submission shows all its errors at once; start, per-arm counts, the
assignments CSV checked against the database, advance and stage 2 assigned. Screenshots of every new page,
at 1366 px and 390 px wide, land in test-artifacts/workspace-*.png.
"""
from __future__ import annotations

import csv
import io
import time
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from pilot.customer_groups import preview, saved_groups
from pilot.db import db
from pilot.models import Assignment, Customer, Pilot
from tests.factories import CHROMIUM, serving

ARTIFACTS = Path("test-artifacts")
pytestmark = pytest.mark.skipif(not CHROMIUM, reason="no Chromium found: install Debian's chromium package "
                                                      "(`apt-get install chromium`) to run the browser tests")
REGIONS = {"north": "North", "south": "South", "west": "West"}


@pytest.fixture
def site(app, backend, client, auth, tokens):
    """A retailer's stores and customers (loaded through the API, as a feed would), served for real."""
    if backend[0] != "sqlite":
        pytest.skip("pages are checked once, on SQLite; the database layer is covered on both elsewhere")
    m = auth("manager")
    for code, name in REGIONS.items():
        assert client.post("/api/v1/regions", json={"code": code, "name": name}, headers=m).status_code == 201
    stores = [{"code": f"{r[0].upper()}{i}", "name": f"{name} {i}", "region": r}
              for r, name in REGIONS.items() for i in range(1, 5)]
    assert client.post("/api/v1/stores/import", json={"stores": stores}, headers=m).status_code == 200
    customers = [{"external_id": f"C{i:04d}", "home_store": stores[i % len(stores)]["code"],
                  "age_band": ["25-34", "35-44", "55-64", "18-24"][i % 4], "children": (i // 4) % 3,
                  "household_size": 1 + (i // 2) % 4} for i in range(1200)]
    assert client.post("/api/v1/customers", json={"customers": customers}, headers=auth("feed")).status_code == 200
    with serving(app) as url:
        yield {"url": url, "tokens": tokens, "app": app}


class Session:
    """A logged-in page that records console errors and takes screenshots."""

    def __init__(self, browser, site, role: str, width: int = 1366, **options) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": 900 if width > 500 else 844},
                                           accept_downloads=True, **options)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda msg: self.errors.append(msg.text) if msg.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", lambda d: d.accept())
        self.url = site["url"]
        self.page.goto(self.url + "/login")
        self.page.fill("#token", site["tokens"][role])
        self.page.click("form:has(#token) button[type=submit]")  # (the page offers e-mail and password too)

    def open(self, path: str):
        return self.page.goto(self.url + path)

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"workspace-{name}.png"), full_page=True)


def _programme(s: Session) -> None:
    page = s.page
    s.open("/programmes/new")
    page.fill("#key", "seed")
    page.fill("#name", "Seed loyalty card")
    page.fill("#v-1-key", "card5")
    page.fill("#v-1-name", "5% card")
    page.select_option("#v-1-mechanic", "fixed_discount")
    assert page.locator("#v-1-fixed_discount-rate").is_visible()
    assert not page.locator("#v-1-tiered-tiers-0-name").is_visible()  # only the chosen mechanic's inputs
    page.fill("#v-1-fixed_discount-rate", "5")
    page.click("text=Add a variant")
    page.fill("#v-2-key", "tiers")
    page.fill("#v-2-name", "Silver, gold, platinum")
    page.select_option("#v-2-mechanic", "tiered")
    rows = (("silver", "0", "2"), ("gold", "500", "5"), ("platinum", "1500", "8"))
    table = page.locator(".variant[data-index='2'] [data-mechanic='tiered'] [data-table]")
    for r, (name, threshold, rate) in enumerate(rows):
        if r:
            table.get_by_text("Add a row").click()
        page.fill(f"#v-2-tiered-tiers-{r}-name", name)
        page.fill(f"#v-2-tiered-tiers-{r}-threshold", threshold)
        page.fill(f"#v-2-tiered-tiers-{r}-discount_rate", rate)
    till = page.locator("[data-preview-for='2']")
    page.wait_for_function("document.querySelector(\"[data-preview-for='2']\").textContent.includes('platinum')")
    assert "gold from 500 spent: 5% off" in till.inner_text()
    assert page.locator("[data-preview-for='1']").inner_text() == "5% off every purchase with the card."
    s.shot("programme-form")
    page.click("#programme-form button[type=submit]")
    page.wait_for_selector("p.notice")
    assert "created with 3 variants" in page.locator("p.notice").inner_text()


def _group(s: Session, key: str, name: str, rules: list[tuple[str, str, str]]) -> dict[str, str]:
    page = s.page
    s.open("/groups/new")
    page.fill("#key", key)
    page.fill("#name", name)
    for r, (attribute, op, value) in enumerate(rules):
        if r:
            page.click("text=Add a rule")
        page.fill(f"#r-{r}-attribute", attribute)
        page.select_option(f"#r-{r}-op", op)
        page.fill(f"#r-{r}-value", value)
    page.wait_for_function("/\\d/.test(document.getElementById('preview-alone').textContent)")
    page.wait_for_timeout(400)  # the last keystroke's preview
    counts = {"alone": page.locator("#preview-alone").inner_text(), "in_list": page.locator("#preview-in-list").inner_text()}
    s.shot(f"group-form-{key}")
    page.click("#group-form button[type=submit]")
    page.wait_for_selector("p.notice")
    return counts


def _pilot_form(s: Session, start: str) -> None:
    page = s.page
    s.open("/pilots/new")
    page.select_option("#programme", "seed")
    page.click("text=Continue")
    page.fill("#key", "seed-pilot")
    # deliberately wrong: no name, α of 2, weights adding to 90%, no region, a planned end before the start
    page.fill("#alpha", "2")
    page.fill("#s-0-name", "Two regions")
    for variant, weight in (("control", "30"), ("card5", "30"), ("tiers", "30")):
        page.fill(f"#s-0-w-{variant}", weight)
    page.fill("#s-0-start", start)
    page.fill("#s-0-end", "2020-01-01")
    assert "must be 100%" in page.locator("#s-0-total").inner_text()
    page.click("#pilot-form button[type=submit]")
    page.wait_for_selector("#error-summary")
    summary = page.locator("#error-summary").inner_text()
    for expected in ("Name", "Alpha", "Stage 1 › Allocation", "Stage 1 › Planned end"):
        assert expected in summary, (expected, summary)
    assert "5 things to fix" in summary or "4 things to fix" in summary
    assert page.locator("#alpha-error").is_visible() and page.locator("#name-error").is_visible()
    assert page.locator("#s-0-allocation-error").is_visible()
    s.shot("pilot-form-errors")
    page.fill("#name", "Seed card pilot")
    page.fill("#alpha", "0.05")
    page.check("#s-0-region-north")
    page.check("#s-0-region-south")
    page.fill("#s-0-w-control", "34")
    page.fill("#s-0-w-card5", "33")
    page.fill("#s-0-w-tiers", "33")
    page.fill("#s-0-end", (date.fromisoformat(start) + timedelta(days=42)).isoformat())
    page.check("#s-0-group-young_parents")
    page.check("#s-0-group-singles")
    page.check("#g-visits_per_customer")
    page.fill("#s-0-gate-min_units_per_arm", "50")
    page.wait_for_function("document.getElementById('s-0-count').textContent.includes('8 stores')")
    assert page.locator("#s-0-total").inner_text().startswith("100%")
    page.click("text=Add a stage")
    page.fill("#s-1-name", "All regions")
    for region in REGIONS:
        page.check(f"#s-1-region-{region}")
    page.wait_for_function("document.getElementById('s-1-count').textContent.includes('12 stores')")
    assert page.locator("#s-1-w-card5").input_value() == "33"  # copied from the stage before
    s.shot("pilot-form")
    page.click("#pilot-form button[type=submit]")
    page.wait_for_selector("p.notice")
    assert "Draft pilot Seed card pilot saved" in page.locator("p.notice").inner_text()


def _wait_assigned(s: Session, stage: int) -> None:
    s.page.wait_for_function(f"(document.getElementById('assignment-progress') || {{}}).dataset && "
                             f"document.getElementById('assignment-progress').dataset.status === 'done' && "
                             f"document.getElementById('assignment-progress').textContent.includes('Stage {stage}')",
                             timeout=30000)


def test_the_seed_scenario_in_the_browser_only(browser, site):
    began = time.monotonic()
    s = Session(browser, site, "manager")
    _programme(s)
    s.open("/programmes/seed")
    s.shot("programme")
    young = _group(s, "young_parents", "Young parents", [("age_band", "in", "25-34, 35-44"), ("children", "ge", "1")])
    singles = _group(s, "singles", "Singles", [("household_size", "eq", "1")])
    with site["app"].app_context():
        groups = saved_groups(db.session)
        counts = preview(db.session, groups)["counts"]
    assert young["in_list"] == f"{counts['young_parents']:,}" and singles["in_list"] == f"{counts['singles']:,}"
    s.open("/groups")
    assert s.page.locator("#group-list").inner_text().count("Young parents") == 1
    s.shot("groups")

    start = (date.today() + timedelta(days=1)).isoformat()
    s.open("/pilots/new")
    s.shot("pilot-start")
    _pilot_form(s, start)
    s.shot("pilot-draft")
    s.open("/pilots/seed-pilot/edit")
    assert s.page.locator("#s-1-name").input_value() == "All regions"
    s.shot("pilot-edit")
    s.open("/programmes")
    s.shot("programmes")
    s.open("/pilots/seed-pilot")
    s.page.click("button[value=start]")
    _wait_assigned(s, 1)
    with site["app"].app_context():
        pilot = db.session.scalar(select(Pilot).where(Pilot.key == "seed-pilot"))
        stored = {c: v for c, v in db.session.execute(
            select(Customer.external_id, Assignment.variant).join(Customer, Customer.id == Assignment.customer_id)
            .where(Assignment.pilot_id == pilot.id))}
    table = s.page.locator("table[aria-describedby=assigned]").inner_text()
    assert f"{len(stored):,}" in table and len(stored) > 100
    s.shot("pilot-running")
    with s.page.expect_download() as info:
        s.page.click("text=Download CSV")
    rows = list(csv.DictReader(io.StringIO(Path(info.value.path()).read_text())))
    assert {r["customer"]: r["variant"] for r in rows} == stored
    assert {r["group"] for r in rows} <= {"young_parents", "singles"}

    s.page.click("button[value=advance]")  # the gate holds: no analysis has seen the stage yet
    s.page.wait_for_selector("p.error")
    assert "gate of stage 1 is not met" in s.page.locator("p.error").inner_text()
    s.page.check("#override")
    s.page.fill("#advance-reason", "Seed scenario: widening before the first analysis")
    s.page.click("button[value=advance]")
    _wait_assigned(s, 2)
    table = s.page.locator("table[aria-describedby=assigned]").inner_text()
    assert "2. All regions" in table and "All stages" in table
    with site["app"].app_context():
        stage2 = db.session.scalars(select(Assignment.stage).where(Assignment.pilot_id == pilot.id,
                                                                   Assignment.stage == 2)).all()
    assert len(stage2) > 0
    s.shot("pilot-advanced")
    assert [e for e in s.errors if "status of 422" not in e] == []  # (the wrong submission is answered 422)

    admin = Session(browser, site, "admin")
    admin.open("/admin/tokens")
    admin.page.fill("#name", "CRM export")
    admin.page.select_option("#role", "feed")
    admin.page.click("text=Create token")
    assert admin.page.locator("#secret").inner_text().startswith("plt_")
    admin.shot("tokens")
    admin.open("/admin/audit?entity_type=pilot")
    assert "advance pilot" in admin.page.locator("#audit-list").inner_text()
    admin.shot("audit")
    admin.open("/pilots/nope")
    admin.shot("error-404")
    assert admin.errors == [] or all("404" in e for e in admin.errors)
    elapsed = time.monotonic() - began

    phone = Session(browser, site, "manager", width=390)
    for path, name in (("/programmes/new", "programme-form"), ("/programmes/seed", "programme"),
                       ("/groups", "groups"), ("/groups/young_parents", "group-form"),
                       ("/pilots/new?programme=seed", "pilot-form"), ("/pilots/seed-pilot", "pilot-advanced"),
                       ("/programmes", "programmes"), ("/pilots/new", "pilot-start"), ("/pilots", "pilots"),
                       ("/pilots/nope", "error-404")):
        phone.open(path)
        phone.page.wait_for_timeout(300)
        phone.shot(f"{name}-phone")
        width = phone.page.evaluate("document.documentElement.scrollWidth")
        assert width <= 400, (path, width)
    admin_phone = Session(browser, site, "admin", width=390)
    for path, name in (("/admin/tokens", "tokens"), ("/admin/audit?entity_type=pilot", "audit")):
        admin_phone.open(path)
        admin_phone.shot(f"{name}-phone")
        assert admin_phone.page.evaluate("document.documentElement.scrollWidth") <= 400, path
    print(f"seed scenario in the browser: {elapsed:.1f} s")


# the focused element, whether its focus ring shows (an outline, or a box-shadow that is not all zero), and
# whether the page was scrolled so that it is in view
FOCUS = """() => { const el = document.activeElement, st = getComputedStyle(el), r = el.getBoundingClientRect();
  const shadow = st.boxShadow !== 'none' && /[1-9]/.test(st.boxShadow.replace(/rgba?\\([^)]*\\)/g, ''));
  const outline = st.outlineStyle !== 'none' && parseFloat(st.outlineWidth) > 0;
  return {id: el.id, tag: el.tagName, ring: shadow || outline, inView: r.bottom > 0 && r.top < innerHeight}; }"""


class Keys:
    """The keyboard only: Tab (or Shift+Tab) to a field, checking its focus shows; type; Space; Enter."""

    def __init__(self, page) -> None:
        self.page, self.visited = page, 0

    def to(self, selector: str, back: bool = False, limit: int = 400) -> None:
        for _ in range(limit):
            self.page.keyboard.press("Shift+Tab" if back else "Tab")
            self.visited += 1
            if self.page.evaluate(f"document.activeElement.matches({selector!r})"):
                focus = self.page.evaluate(FOCUS)
                assert focus["ring"] and focus["inView"], (selector, focus)
                return
        raise AssertionError(f"{selector} cannot be reached with Tab")

    def type(self, selector: str, text: str, back: bool = False) -> None:
        self.to(selector, back)
        self.page.keyboard.press("Control+A")
        self.page.keyboard.type(text)

    def press(self, selector: str, key: str, back: bool = False) -> None:
        self.to(selector, back)
        self.page.keyboard.press(key)


def _linked(page, field: str) -> str:
    """The error text of an invalid field, through its aria-describedby (which also keeps its help)."""
    info = page.evaluate("""id => { const el = document.getElementById(id);
        const ids = (el.getAttribute('aria-describedby') || '').split(' ').filter(Boolean);
        return {invalid: el.getAttribute('aria-invalid'), ids: ids,
                texts: ids.map(i => (document.getElementById(i) || {}).textContent)}; }""", field)
    assert info["invalid"] == "true" and f"{field}-error" in info["ids"], (field, info)
    assert all(info["texts"]), info  # every id it names exists
    return info["texts"][info["ids"].index(f"{field}-error")]


def test_the_programme_and_pilot_forms_with_the_keyboard_only(browser, site):
    s = Session(browser, site, "manager", reduced_motion="reduce")
    page, keys = s.page, Keys(s.page)
    s.open("/programmes/new")
    keys.type("#key", "kbd card")  # a space: refused, next to the field
    keys.type("#name", "Keyboard card")
    keys.type("#v-1-key", "card5")
    keys.type("#v-1-name", "5% card")
    keys.to("#v-1-mechanic")
    page.keyboard.type("Fixed")  # a closed select takes the option's first letters
    assert page.locator("#v-1-fixed_discount-rate").is_visible()
    keys.type("#v-1-fixed_discount-rate", "5")
    keys.press("[data-add-variant]", "Enter")
    assert page.evaluate("document.activeElement.id") == "v-2-key"  # the new variant takes the focus
    page.keyboard.type("tiers")
    keys.type("#v-2-name", "Tiers")
    keys.to("#v-2-mechanic")
    page.keyboard.type("Tiers")
    for r, (name, threshold, rate) in enumerate((("silver", "0", "2"), ("gold", "500", "5"))):
        if r:
            keys.press(".variant[data-index='2'] [data-mechanic='tiered'] [data-add-row]", "Space")
            assert page.evaluate("document.activeElement.id") == f"v-2-tiered-tiers-{r}-name"  # the new row's
            page.keyboard.type(name)
        else:
            keys.type(f"#v-2-tiered-tiers-{r}-name", name)
        keys.type(f"#v-2-tiered-tiers-{r}-threshold", threshold)
        keys.type(f"#v-2-tiered-tiers-{r}-discount_rate", rate)
    page.wait_for_function("document.querySelector(\"[data-preview-for='2']\").textContent.includes('gold')")
    page.keyboard.press("Enter")  # submits the form
    page.wait_for_selector("#error-summary")
    assert page.evaluate("document.activeElement.id") == "error-summary"  # read first
    assert "letters, digits" in _linked(page, "key")
    assert page.locator("#v-2-tiered-tiers-1-name").input_value() == "gold"  # what was typed stays
    s.shot("programme-form-keyboard-errors")
    keys.type("#key", "kbd")
    page.keyboard.press("Enter")
    page.wait_for_selector("p.notice")
    assert "created with 3 variants" in page.locator("p.notice").inner_text()

    s.open("/pilots/new")
    keys.to("#programme")
    page.keyboard.type("Keyboard")
    keys.press("button[type=submit]", "Enter")
    page.wait_for_selector("#pilot-form")
    keys.type("#key", "kbd-pilot")
    keys.type("#name", "Keyboard pilot")
    keys.type("#alpha", "2")  # refused: α is at most 0.5
    keys.press("#s-0-region-north", "Space")
    for variant, weight in (("control", "50"), ("card5", "50")):
        keys.type(f"#s-0-w-{variant}", weight)
    keys.press("#s-0-out-tiers", "Space")  # tiers left out of this pilot
    assert page.locator("#s-0-w-tiers").is_disabled()
    page.wait_for_function("document.getElementById('s-0-total').textContent.startsWith('100%')")
    keys.type("#s-0-gate-min_units_per_arm", "50")
    page.keyboard.press("Enter")
    page.wait_for_selector("#error-summary")
    assert "0.5" in _linked(page, "alpha")
    assert page.evaluate("document.getElementById('alpha').getAttribute('aria-describedby')") == \
        "alpha-help alpha-error"  # the help text stays linked too
    keys.type("#alpha", "0.05")
    keys.press("[data-add-stage]", "Enter")
    assert page.evaluate("document.activeElement.id") == "s-1-name"
    page.keyboard.type("All regions")
    for region in REGIONS:
        keys.press(f"#s-1-region-{region}", "Space")
    assert page.locator("#s-1-out-tiers").is_checked()  # copied from the stage before
    keys.to("#pilot-form button[type=submit]")
    page.keyboard.press("Enter")
    page.wait_for_selector("p.notice")
    assert "Draft pilot Keyboard pilot saved" in page.locator("p.notice").inner_text()
    with site["app"].app_context():
        pilot = db.session.scalar(select(Pilot).where(Pilot.key == "kbd-pilot"))
        assert [s.allocation for s in pilot.stages] == [{"control": 0.5, "card5": 0.5}] * 2
        assert pilot.alpha == 0.05 and pilot.stages[1].region_codes == list(REGIONS)
    assert [e for e in s.errors if "status of 422" not in e] == []
    print(f"keyboard: {keys.visited} key presses to move between fields")
