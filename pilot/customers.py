"""Customers (bulk upsert by external id) and customer groups (ordered, audited)."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from pilot.audit import created, record, updating
from pilot.db import ensure_new, found, utcnow
from pilot.models import Customer, CustomerGroup, Store
from pilot.row_validation import RowErrors

CHUNK = 2000
CUSTOMER_FIELDS = ("age_band", "household_size", "children", "attributes")
ROW_COLUMNS = ("external_id", "home_store_id", *CUSTOMER_FIELDS, "created_at", "updated_at")


def customer_row(external_id: str, data: dict[str, Any], home_store_id: int | None) -> dict[str, Any]:
    """The columns (ROW_COLUMNS) of a new customer from validated input."""
    now = utcnow()
    return {"external_id": external_id, "home_store_id": home_store_id,
            **{f: data.get(f) for f in CUSTOMER_FIELDS}, "attributes": data.get("attributes") or {},
            "created_at": now, "updated_at": now}


class CustomerWriter:
    """Upserts validated customer rows in chunks inside the caller's transaction."""

    def __init__(self, session: Session, errors: RowErrors, on_conflict: str = "update") -> None:
        self.session, self.errors, self.on_conflict = session, errors, on_conflict
        self.stores = dict(session.execute(select(Store.code, Store.id)).all())
        self.pending: list[dict[str, Any]] = []
        self.rows = 0

    def add(self, number: int, data: dict[str, Any]) -> None:
        """Queue one row; an unknown home store is a row error."""
        self.rows += 1
        code = data.get("home_store")
        if code is not None and code not in self.stores:
            self.errors.add(number, "home_store", f"Unknown store {code!r}.")
            return
        if self.errors.count:
            return  # the batch is lost anyway: only keep validating
        self.pending.append(customer_row(data["external_id"], data, self.stores.get(code)))
        if len(self.pending) >= CHUNK:
            self.flush()

    def flush(self) -> None:
        """Write the queued rows with one INSERT … ON CONFLICT DO UPDATE."""
        if not self.pending or self.errors.count:
            self.pending = []
            return
        dialect = postgresql if self.session.bind.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(Customer).values(self.pending)
        if self.on_conflict == "nothing":
            self.session.execute(stmt.on_conflict_do_nothing(index_elements=["external_id"]))
        else:
            cols = {c: stmt.excluded[c] for c in (*CUSTOMER_FIELDS, "home_store_id", "updated_at")}
            self.session.execute(stmt.on_conflict_do_update(index_elements=["external_id"], set_=cols))
        self.pending = []


def upsert_customers(session: Session, actor: str, rows: Iterable[tuple[int, dict[str, Any]]],
                     errors: RowErrors) -> dict[str, int]:
    """Upsert every row, or nothing: the caller raises (and rolls back) when errors were found."""
    before = session.scalar(select(func.count()).select_from(Customer))
    writer = CustomerWriter(session, errors)
    for number, data in rows:
        writer.add(number, data)
    writer.flush()
    errors.raise_if_any(writer.rows)
    after = session.scalar(select(func.count()).select_from(Customer))
    counts = {"rows": writer.rows, "created": after - before, "updated": writer.rows - (after - before)}
    record(session, actor, "upsert", "customers", None, after=counts)
    return counts


def get_customer(session: Session, external_id: str) -> Customer:
    """The customer with the external id, or a 404."""
    return found(session, Customer, f"No customer with external id {external_id!r}.", external_id=external_id)


def group_dict(group: CustomerGroup) -> dict[str, Any]:
    """A group as plain data for audit events."""
    return {"key": group.key, "name": group.name, "position": group.position, "rules": group.rules}


def get_group(session: Session, key: str) -> CustomerGroup:
    """The group with the key, or a 404."""
    return found(session, CustomerGroup, f"No customer group {key!r}.", key=key)


def create_group(session: Session, actor: str, data: dict[str, Any]) -> CustomerGroup:
    """Add a group at its position (default: last); later groups move down one."""
    ensure_new(session, CustomerGroup, f"Customer group {data['key']!r} exists already.", key=data["key"])
    count = session.scalar(select(func.count()).select_from(CustomerGroup))
    position = min(data.pop("position", None) or count + 1, count + 1)
    session.execute(update(CustomerGroup).where(CustomerGroup.position >= position)
                    .values(position=CustomerGroup.position + 1))
    return created(session, actor, "customer_group", CustomerGroup(position=position, **data), data["key"], group_dict)


def update_group(session: Session, actor: str, group: CustomerGroup, data: dict[str, Any]) -> CustomerGroup:
    """Change a group's name, rules or position."""
    with updating(session, actor, "customer_group", group.key, group, group_dict):
        if "position" in data:
            _move(session, group, data.pop("position"))
        for key, value in data.items():
            setattr(group, key, value)
    return group


def delete_group(session: Session, actor: str, group: CustomerGroup) -> None:
    """Remove a group; the groups after it move up one."""
    record(session, actor, "delete", "customer_group", group.key, before=group_dict(group))
    session.execute(update(CustomerGroup).where(CustomerGroup.position > group.position)
                    .values(position=CustomerGroup.position - 1))
    session.delete(group)


def _move(session: Session, group: CustomerGroup, position: int) -> None:
    count = session.scalar(select(func.count()).select_from(CustomerGroup))
    position = max(1, min(position, count))
    others = [g for g in session.scalars(select(CustomerGroup).order_by(CustomerGroup.position))
              if g.id != group.id]
    others.insert(position - 1, group)
    for index, g in enumerate(others, start=1):
        g.position = index
