"""Who got which variant: a pilot's stored assignments, filtered, page by page (API) or all of them (CSV)."""
from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session, aliased

from pilot.customer_groups import OTHER, group_case, saved_groups
from pilot.errors import Invalid
from pilot.models import Assignment, Customer, Pilot, Store

COLUMNS = ("customer", "variant", "stage", "home_store", "store", "group", "assigned_at")
CSV_CHUNK = 5000


def _invalid(field: str, message: str) -> Invalid:
    return Invalid(message, details={"fields": {field: [message]}, "errors": [{"path": field, "message": message}]})


def parse_filters(query: dict[str, str]) -> dict[str, Any]:
    """The filters of a page's query string (`since` as ISO 8601 with a UTC offset); empty ones left out."""
    filters: dict[str, Any] = {k: query[k] for k in ("variant", "store", "group") if query.get(k)}
    if query.get("since"):
        try:
            since = datetime.fromisoformat(query["since"])
        except ValueError:
            since = None
        if since is None or since.tzinfo is None:
            raise _invalid("since", "Not a time with a UTC offset (e.g. 2026-11-20T00:00:00+00:00).")
        filters["since"] = since
    return filters


def check_filters(session: Session, pilot: Pilot, filters: dict[str, Any]) -> None:
    """A 422 naming the filter for a variant, store or customer group that does not exist."""
    variant, store, group = filters.get("variant"), filters.get("store"), filters.get("group")
    if variant is not None and variant not in {v.key for v in pilot.programme.variants}:
        raise _invalid("variant", f"Pilot {pilot.key!r} has no variant {variant!r}.")
    if store is not None and session.scalar(select(Store.id).where(Store.code == store)) is None:
        raise _invalid("store", f"No store {store!r}.")
    if group is not None and group != OTHER and group not in {g["key"] for g in saved_groups(session)}:
        raise _invalid("group", f"No customer group {group!r} (or 'other').")


def _statement(session: Session, pilot: Pilot, filters: dict[str, Any]) -> Select:
    home, at = aliased(Store), aliased(Store)
    group = group_case(saved_groups(session)).label("group")
    stmt = (select(Assignment.customer_id, Customer.external_id.label("customer"), Assignment.variant,
                   Assignment.stage, home.code.label("home_store"), at.code.label("store"), group,
                   Assignment.assigned_at)
            .join(Customer, Customer.id == Assignment.customer_id)
            .outerjoin(home, home.id == Customer.home_store_id)
            .outerjoin(at, at.id == Assignment.store_id)
            .where(Assignment.pilot_id == pilot.id))
    if filters.get("variant") is not None:
        stmt = stmt.where(Assignment.variant == filters["variant"])
    if filters.get("store") is not None:
        stmt = stmt.where(home.code == filters["store"])
    if filters.get("group") is not None:
        stmt = stmt.where(group_case(saved_groups(session)) == filters["group"])
    if filters.get("since") is not None:
        stmt = stmt.where(Assignment.assigned_at >= filters["since"])
    return stmt


def assignment_rows(session: Session, pilot: Pilot, filters: dict[str, Any], after: int = 0,
                    limit: int = 100) -> list[dict[str, Any]]:
    """Up to `limit` assignments after the customer id `after`, in customer order, with the filters
    `variant`, `store` (the customer's home store), `group` (customer group key or 'other') and
    `since` (assigned at or after). Each row keeps `customer_id`, the key of the next page."""
    stmt = _statement(session, pilot, filters).where(Assignment.customer_id > after)
    rows = session.execute(stmt.order_by(Assignment.customer_id).limit(limit)).mappings().all()
    return [dict(r) for r in rows]


def count_rows(session: Session, pilot: Pilot, filters: dict[str, Any]) -> int:
    """How many assignments the filters keep."""
    return session.scalar(select(func.count()).select_from(_statement(session, pilot, filters).subquery()))


def csv_lines(session: Session, pilot: Pilot, filters: dict[str, Any]) -> Iterator[str]:
    """Every assignment the filters keep as CSV (header first), read in chunks so memory stays flat."""
    yield ",".join(COLUMNS) + "\n"
    after = 0
    try:
        while rows := assignment_rows(session, pilot, filters, after, CSV_CHUNK):
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            for r in rows:
                writer.writerow([_cell(r[c]) for c in COLUMNS])
            yield buffer.getvalue()
            after = rows[-1]["customer_id"]
    finally:
        session.rollback()  # the read transaction ends with the stream, also when the client leaves early


def _cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    # a spreadsheet runs a cell that starts with these as a formula (CSV injection): quote it as text
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
