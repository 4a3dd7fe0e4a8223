"""Programmes and variants: mechanics validated per variant, audited."""
from __future__ import annotations

from typing import Any

import marshmallow as ma
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pilot.audit import created, record
from pilot.db import ensure_new, found
from pilot.errors import Conflict, Invalid
from pilot.mechanics import describe, validate_parameters
from pilot.models import Pilot, Programme, Variant
from pilot.models.pilots import LIVE_STATES


def programme_dict(p: Programme) -> dict[str, Any]:
    """A programme with its variants, as plain data."""
    return {"key": p.key, "name": p.name, "description": p.description,
            "variants": [variant_dict(v) for v in p.variants]}


def variant_dict(v: Variant) -> dict[str, Any]:
    """A variant as plain data, with its plain-language description."""
    return {"key": v.key, "name": v.name, "mechanic": v.mechanic, "parameters": v.parameters,
            "description": describe(v.mechanic, v.parameters)}


def get_programme(session: Session, key: str) -> Programme:
    """The programme with the key, or a 404."""
    return found(session, Programme, f"No programme {key!r}.", key=key)


def checked_variant(data: dict[str, Any], index: int | None = None) -> Variant:
    """A variant whose parameters passed its mechanic's schema (422 naming the field otherwise)."""
    try:
        params = validate_parameters(data["mechanic"], data.get("parameters") or {})
    except ma.ValidationError as exc:
        where = {"variants": {str(index): {"parameters": exc.messages}}} if index is not None else \
            {"parameters": exc.messages}
        raise Invalid(f"Parameters of variant {data['key']!r} ({data['mechanic']}) are invalid.",
                       details={"fields": where}) from None
    return Variant(key=data["key"], name=data.get("name") or data["key"], mechanic=data["mechanic"], parameters=params)


def create_programme(session: Session, actor: str, data: dict[str, Any]) -> Programme:
    """Add a programme with its variants."""
    ensure_new(session, Programme, f"Programme {data['key']!r} exists already.", key=data["key"])
    keys = [v["key"] for v in data["variants"]]
    if len(set(keys)) != len(keys):
        raise Invalid("Variant keys must be unique.", details={"fields": {"variants": ["Repeated key."]}})
    programme = Programme(key=data["key"], name=data["name"], description=data.get("description", ""),
                          variants=[checked_variant(v, i) for i, v in enumerate(data["variants"])])
    return created(session, actor, "programme", programme, programme.key, programme_dict)


def live_pilots_of(session: Session, programme: Programme) -> list[str]:
    """The keys of the programme's running or paused pilots (its variants cannot change while any is)."""
    return list(session.scalars(select(Pilot.key).where(Pilot.programme_id == programme.id,
                                                        Pilot.state.in_(LIVE_STATES)).order_by(Pilot.key)))


def _live_pilots(session: Session, programme: Programme) -> int:
    return session.scalar(select(func.count()).select_from(Pilot).where(
        Pilot.programme_id == programme.id, Pilot.state.in_(LIVE_STATES)))


def update_programme(session: Session, actor: str, programme: Programme, data: dict[str, Any]) -> Programme:
    """Rename or re-describe a programme; variants change only while no pilot of it is live."""
    before = programme_dict(programme)
    if "variants" in data:
        if _live_pilots(session, programme):
            raise Conflict("Variants cannot change while a pilot of this programme runs or is paused.",
                           code="programme_in_use")
        by_key = {v.key: v for v in programme.variants}
        for i, new in enumerate(data.pop("variants")):
            checked = checked_variant(new, i)
            old = by_key.get(checked.key)
            if old is None:
                programme.variants.append(checked)
            else:
                old.name, old.mechanic, old.parameters = checked.name, checked.mechanic, checked.parameters
    for key, value in data.items():
        setattr(programme, key, value)
    session.flush()
    record(session, actor, "update", "programme", programme.key, before=before, after=programme_dict(programme))
    return programme


def delete_programme(session: Session, actor: str, programme: Programme) -> None:
    """Remove a programme no pilot uses."""
    if session.scalar(select(func.count()).select_from(Pilot).where(Pilot.programme_id == programme.id)):
        raise Conflict(f"Programme {programme.key!r} has pilots.", code="programme_in_use")
    record(session, actor, "delete", "programme", programme.key, before=programme_dict(programme))
    session.delete(programme)
