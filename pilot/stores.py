"""Regions and stores: create, update, delete and upsert by code, audited."""
from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pilot.audit import created, record, updating
from pilot.db import ensure_new, found
from pilot.errors import Conflict, Invalid
from pilot.models import ApiToken, Customer, Region, Store, Transaction
from pilot.row_validation import RowErrors

STORE_FIELDS = ("code", "name", "format", "size_sqm", "opening_date", "attributes")


def region_dict(region: Region) -> dict[str, Any]:
    """A region as plain data for audit events."""
    return {"code": region.code, "name": region.name}


def store_dict(store: Store) -> dict[str, Any]:
    """A store as plain data for audit events."""
    data = {f: getattr(store, f) for f in STORE_FIELDS}
    data["region"] = store.region.code if store.region else None
    return data


def get_region(session: Session, code: str) -> Region:
    """The region with the code, or a 404."""
    return found(session, Region, f"No region with code {code!r}.", code=code)


def get_store(session: Session, code: str) -> Store:
    """The store with the code, or a 404."""
    return found(session, Store, f"No store with code {code!r}.", code=code)


EXISTS = {"fields": {"code": ["Exists."]}}


def create_region(session: Session, actor: str, data: dict[str, Any]) -> Region:
    """Add a region; its code must be new."""
    ensure_new(session, Region, f"Region {data['code']!r} exists already.", EXISTS, code=data["code"])
    return created(session, actor, "region", Region(**data), data["code"], region_dict)


def update_region(session: Session, actor: str, region: Region, data: dict[str, Any]) -> Region:
    """Change a region's name."""
    with updating(session, actor, "region", region.code, region, region_dict):
        for key, value in data.items():
            setattr(region, key, value)
    return region


def delete_region(session: Session, actor: str, region: Region) -> None:
    """Remove a region that has no stores."""
    if session.scalar(select(func.count()).where(Store.region_id == region.id)):
        raise Conflict(f"Region {region.code!r} still has stores.", code="region_in_use")
    record(session, actor, "delete", "region", region.code, before=region_dict(region))
    session.delete(region)


def create_store(session: Session, actor: str, data: dict[str, Any]) -> Store:
    """Add a store in an existing region; its code must be new."""
    ensure_new(session, Store, f"Store {data['code']!r} exists already.", EXISTS, code=data["code"])
    region = _region_or_422(session, data["region"])
    store = Store(region=region, **{k: v for k, v in data.items() if k != "region"})
    return created(session, actor, "store", store, store.code, store_dict)


def update_store(session: Session, actor: str, store: Store, data: dict[str, Any]) -> Store:
    """Change a store's fields; `region` is a region code."""
    with updating(session, actor, "store", store.code, store, store_dict):
        if "region" in data:
            store.region = _region_or_422(session, data.pop("region"))
        for key, value in data.items():
            setattr(store, key, value)
    return store


def delete_store(session: Session, actor: str, store: Store) -> None:
    """Remove a store no customer calls home."""
    if session.scalar(select(func.count()).where(Customer.home_store_id == store.id)):
        raise Conflict(f"Store {store.code!r} is the home store of customers.", code="store_in_use")
    if session.scalar(select(func.count()).where(ApiToken.store_id == store.id)):
        raise Conflict(f"Store {store.code!r} has API tokens; revoke and reissue them first.",
                       code="store_in_use")
    if session.scalar(select(Transaction.id).where(Transaction.store_id == store.id).limit(1)):
        raise Conflict(f"Store {store.code!r} has transactions; they are kept, so the store is too.",
                       code="store_in_use")
    record(session, actor, "delete", "store", store.code, before=store_dict(store))
    session.delete(store)


def upsert_stores(session: Session, actor: str, rows: list[tuple[int, dict[str, Any]]],
                  errors: RowErrors) -> dict[str, int]:
    """Create or update stores by code; unknown regions are row errors. Caller raises on errors."""
    regions = {r.code: r for r in session.scalars(select(Region))}
    for number, data in rows:
        if data["region"] not in regions:
            errors.add(number, "region", f"Unknown region {data['region']!r}.")
    if errors.count:
        return {}
    existing = {s.code: s for s in session.scalars(select(Store).where(Store.code.in_([d["code"] for _, d in rows])))}
    counts = {"created": 0, "updated": 0, "unchanged": 0}
    for _, data in rows:
        fields = {k: v for k, v in data.items() if k != "region"}
        store = existing.get(data["code"])
        if store is None:
            store = Store(region=regions[data["region"]], **fields)
            session.add(store)
            session.flush()
            record(session, actor, "create", "store", store.code, after=store_dict(store))
            counts["created"] += 1
            continue
        before = store_dict(store)
        store.region = regions[data["region"]]
        for key, value in fields.items():
            setattr(store, key, value)
        after = store_dict(store)
        if after == before:
            counts["unchanged"] += 1
            continue
        record(session, actor, "update", "store", store.code, before=before, after=after)
        counts["updated"] += 1
    session.flush()
    return counts


def _region_or_422(session: Session, code: str) -> Region:
    region = session.scalar(select(Region).where(Region.code == code))
    if region is None:
        raise Invalid(f"Unknown region {code!r}.", details={"fields": {"region": ["Unknown region."]}})
    return region
