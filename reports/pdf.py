"""The report as a PDF: headless Chromium prints the standalone HTML (figures drawn by plotly.js).

Chromium's own print-to-PDF, run as a subprocess: the figures come out exactly as on screen, with no
Python dependency added (a PDF library would have to redraw every plotly figure). Where no Chromium
is installed the export is unavailable, and the standalone HTML report is the way to share.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

TIMEOUT_SECONDS = 60


class PdfUnavailable(Exception):
    """Chromium is missing or failed to print."""


def chromium_path(configured: str | None = None) -> str | None:
    """The Chromium to print with: `configured`, PILOT_CHROMIUM, or chromium on the PATH."""
    for candidate in (configured, os.environ.get("PILOT_CHROMIUM")):
        if candidate:
            return candidate if Path(candidate).is_file() else None
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def html_to_pdf(html: str, executable: str) -> bytes:
    """Print a self-contained HTML page to PDF (scripts run first: plotly draws the figures)."""
    with tempfile.TemporaryDirectory(prefix="pilot-pdf-") as tmp:
        page, out = Path(tmp) / "report.html", Path(tmp) / "report.pdf"
        page.write_text(html, encoding="utf-8")
        command = [executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                   "--no-first-run", "--disable-extensions", "--hide-scrollbars", f"--user-data-dir={tmp}/profile",
                   "--window-size=1000,1400", "--run-all-compositor-stages-before-draw",
                   "--virtual-time-budget=15000", "--no-pdf-header-footer", f"--print-to-pdf={out}", page.as_uri()]
        try:
            done = subprocess.run(command, capture_output=True, timeout=TIMEOUT_SECONDS, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PdfUnavailable(f"Chromium could not print the report: {exc}") from None
        if not out.is_file() or out.stat().st_size == 0:
            reason = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [f"exit {done.returncode}"]
            raise PdfUnavailable(f"Chromium could not print the report: {reason[0][:300]}")
        return out.read_bytes()
