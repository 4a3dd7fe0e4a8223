"""Store pages: what a store takes part in."""
from __future__ import annotations

from flask import abort, g, render_template

from pilot import rollout
from pilot.db import db
from pilot.pages.base import bp, login_required
from pilot.stores import get_store


@bp.get("/store")
@login_required("store")
def own_store():
    """A store's own status page."""
    return store_page(g.principal.store_code)


@bp.get("/stores/<code>")
@login_required("admin", "manager", "analyst", "store")
def store_page(code: str):
    """What a store takes part in, readable on a phone."""
    if g.principal.role == "store" and g.principal.store_code != code:
        abort(403)
    store = get_store(db.session, code)
    return render_template("store.html", store=store, pilots=rollout.store_status(db.session, store))
