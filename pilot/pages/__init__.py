"""HTML pages: token login into a server-side session (its secret in a signed HttpOnly cookie),
CSRF-checked forms.

The blueprint and what its views share are in base; the views, by concern, in auth (login,
logout), pilots (overview, dashboard, pilot page, lifecycle actions), reports (analysis reports
and exports) and stores (store pages).
"""
from __future__ import annotations

from flask import Flask, Response

from pilot.pages import admin, approvals, auth, groups, metrics, pilot_forms, pilots, plans, programmes, reports, stores  # noqa: F401  (their views join the blueprint)
from pilot.pages.base import bp, csrf_token, error_page, readable_path

# On every answer, API included: no page is framed by another site (clickjacking; both the old
# header and CSP's frame-ancestors), no answer is read as another type than it says. Only
# frame-ancestors: a CSP with script-src would block the inline scripts of Swagger UI and the reports.
SECURITY_HEADERS = {"X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'",
                    "X-Content-Type-Options": "nosniff"}


def security_headers(response: Response) -> Response:
    """Add SECURITY_HEADERS where the answer does not set them itself."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def init_app(app: Flask) -> None:
    """Register the pages, the CSRF helper for templates and the headers of every answer."""
    app.jinja_env.globals["csrf_token"] = csrf_token
    app.extensions["pilot.error_page"] = error_page
    app.jinja_env.filters["readable_path"] = readable_path
    app.register_blueprint(bp)
    app.after_request(security_headers)
