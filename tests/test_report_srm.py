"""A failing sample-ratio check is shown first and plainly: a pilot with assignments lost from one arm
gets `investigate`, a banner above the recommendation and a failed check in the trust panel, on the
page, in the standalone HTML and in the PDF (read back from the PDF's text)."""
from __future__ import annotations

import io
import re

import pytest
from pypdf import PdfReader
from scipy import stats
from sqlalchemy import text

from pilot import analysis_runs
from pilot.analysis_config import SRM_ALPHA
from pilot.auth import CLI
from pilot.db import db
from pilot.rollout import get_pilot
from reports.pdf import chromium_path
from tests.factories import NOW, login, plant
from tests.test_reports import page_text


@pytest.fixture
def mismatched(app):
    """A pilot that lost a third of its control arm's assignments (planted), analysed; the raw counts."""
    key = plant(app, "srm", customers=900, stores=8, key="srm", srm_drop=0.35)
    with app.app_context():
        pilot = get_pilot(db.session, key)
        run = analysis_runs.create_run(db.session, CLI.actor, pilot, cutoff=NOW)
        analysis_runs.execute(db.session, run)
        db.session.commit()
        counts = dict(db.session.execute(text("SELECT variant, COUNT(*) FROM assignments WHERE pilot_id = :p "
                                              "GROUP BY variant"), {"p": pilot.id}).all())
        return {"run": run.id, "decision": run.decision, "counts": counts, "weights": pilot.stages[0].allocation}


def srm_shown(text_: str, counts: dict, weights: dict) -> None:
    """The mismatch reads before the recommendation, with each arm's units and expected units."""
    total = sum(counts.values())
    chi2 = stats.chisquare([counts[a] for a in weights], [total * weights[a] for a in weights])
    assert chi2.pvalue < SRM_ALPHA
    banner = text_.index("Sample-ratio mismatch.")
    assert banner < text_.index("Recommendation: investigate")
    for arm, w in weights.items():
        assert f"{arm} {counts[arm]} (expected {total * w:.0f})" in text_
    assert f"χ² p = {chi2.pvalue:.2g}" in text_ and "Sample-ratio check: failed" in text_
    trust = text_[text_.index("Sample-ratio check: failed"):]
    for arm, w in weights.items():
        assert f"{arm} {counts[arm]} {total * w:.0f} {counts[arm] / total:.1%} {w:.1%}" in trust


def test_a_sample_ratio_mismatch_is_shown_first_on_the_page_and_in_the_exports(app, client, tokens, mismatched):
    assert mismatched["decision"] == "investigate"
    counts, weights = mismatched["counts"], mismatched["weights"]
    assert counts["control"] < counts["bonus"]  # the planted loss
    login(client, tokens["analyst"])
    html = client.get(f"/analyses/{mismatched['run']}").get_data(as_text=True)
    assert 'id="srm-banner"' in html and 'class="srm-failed" role="alert"' in html
    srm_shown(page_text(html), counts, weights)
    bearer = {"Authorization": f"Bearer {tokens['analyst']}"}
    standalone = client.get(f"/analyses/{mismatched['run']}/report.html", headers=bearer).get_data(as_text=True)
    srm_shown(page_text(re.sub(r"<script>.*?</script>", "", standalone, flags=re.S)), counts, weights)
    if chromium_path(app.config.get("CHROMIUM")) is None:
        pytest.skip("no Chromium to print the PDF")
    pdf = client.get(f"/analyses/{mismatched['run']}/report.pdf", headers=bearer)
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf"
    reader = PdfReader(io.BytesIO(pdf.data))
    printed = re.sub(r"\s+", " ", " ".join(p.extract_text() for p in reader.pages))
    first_page = re.sub(r"\s+", " ", reader.pages[0].extract_text())
    assert "Sample-ratio mismatch." in first_page and "Recommendation: investigate" in first_page
    srm_shown(printed, counts, weights)
