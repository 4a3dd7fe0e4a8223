"""The data-quality report: rows per day and per store, late events, rejected rows per ingestion batch;
and what a failed or rejected batch leaves missing, for the pilots whose stores, customers and
window its rows concerned (`missing_batches`), until a later batch brings the same events in."""
from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Integer, cast, func, select
from sqlalchemy.orm import Session

from pilot.errors import Invalid, NotFound
from pilot.models import CustomerEvent, IngestionBatch, Store, Transaction
from pilot.sqltime import day, epoch_seconds

# The window's days, so that its bounds (a day after `to`, 29 days before it) are dates too.
FIRST_DAY, LAST_DAY = date(1900, 1, 1), date(9999, 12, 30)


def report(session: Session, args: dict) -> dict:
    """The data-quality report for a window of days (`start`, `end`), one `store` or all, and `late_hours`."""
    start, end = _window(args)
    dialect = session.bind.dialect.name
    lo = datetime.combine(start, datetime.min.time(), UTC)
    hi = datetime.combine(end + timedelta(days=1), datetime.min.time(), UTC)
    t = Transaction
    where = [t.occurred_at >= lo, t.occurred_at < hi]
    only = []
    if "store" in args:
        store_id = session.scalar(select(Store.id).where(Store.code == args["store"]))
        if store_id is None:
            raise NotFound(f"No store {args['store']!r}.")
        where.append(t.store_id == store_id)
        only.append(Store.id == store_id)
    per_day = _per_day(session, dialect, where, args["late_hours"])
    per_store = _per_store(session, dialect, where, only)
    b = IngestionBatch
    in_window = [b.started_at >= lo, b.started_at < hi]
    batches = list(session.scalars(select(b).where(*in_window).order_by(b.id.desc()).limit(50)))
    rejected, failed = session.execute(select(func.coalesce(func.sum(b.rejected), 0),
                                              func.count().filter(b.status.in_(("rejected", "failed"))))
                                       .where(*in_window)).one()
    return {"window": {"from": start.isoformat(), "to": end.isoformat()}, "late_hours": args["late_hours"],
            "rows": sum(r["rows"] for r in per_day), "late": sum(r["late"] for r in per_day),
            "per_day": per_day, "per_store": per_store, "batches": batches,
            "rejected_rows": int(rejected), "failed_batches": int(failed)}


def _window(args: dict) -> tuple[date, date]:
    """The first and last day asked for: by default the 30 days up to today (UTC)."""
    end = args.get("end") or datetime.now(UTC).date()
    start = args.get("start") or max(end - timedelta(days=29), FIRST_DAY)
    if start > end:
        raise Invalid("'from' is after 'to'.", details={"fields": {"query": {"from": ["After 'to'."]}}})
    if (end - start).days > 3660:
        raise Invalid("The window is at most ten years.", details={"fields": {"query": {"from": ["Too early."]}}})
    return start, end


def _per_day(session: Session, dialect: str, where: list, late_hours: int) -> list[dict]:
    """Rows, amount and late events per UTC day."""
    t = Transaction
    late_expr = func.sum(cast(epoch_seconds(t.received_at, dialect) - epoch_seconds(t.occurred_at, dialect)
                              > late_hours * 3600, Integer))
    d = day(t.occurred_at, dialect).label("d")
    return [{"date": str(r.d), "rows": r.n, "amount": float(r.amount or 0), "late": int(r.late or 0)}
            for r in session.execute(select(d, func.count().label("n"), func.sum(t.amount).label("amount"),
                                            late_expr.label("late")).where(*where).group_by(d).order_by(d))]


def _per_store(session: Session, dialect: str, where: list, only: list) -> list[dict]:
    """Rows, days with data and the last event and receipt per store, stores without rows included."""
    t = Transaction
    days = day(t.occurred_at, dialect)
    stats = {r.store_id: r for r in session.execute(
        select(t.store_id, func.count().label("n"), func.count(days.distinct()).label("days"),
               func.max(t.occurred_at).label("last_event"), func.max(t.received_at).label("last_received"))
        .where(*where).group_by(t.store_id))}
    stores = session.execute(select(Store.id, Store.code).where(*only).order_by(Store.code)).all()
    return [{"store": code, "rows": stats[sid].n if sid in stats else 0,
             "days_with_data": stats[sid].days if sid in stats else 0,
             "last_event_at": _utc(stats[sid].last_event) if sid in stats else None,
             "last_received_at": _utc(stats[sid].last_received) if sid in stats else None}
            for sid, code in stores]


def _utc(value: datetime | str | None) -> datetime | None:
    """max() over a timestamp comes back as text on SQLite."""
    if value is None or isinstance(value, datetime):
        return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


# -- what a batch concerned, and which pilots a failed or rejected batch leaves short ---------------

SCOPE_LIMIT = 10_000  # event ids and customers a batch's scope keeps; past it, stores and window only


class BatchScope:
    """The stores, customers, event ids and time window of a batch's rows, bad rows included (their
    corrected rows come back with the same event ids)."""

    def __init__(self) -> None:
        self.stores: set[int] = set()
        self.customers: set[str] | None = set()
        self.events: set[str] | None = set()
        self.first: datetime | None = None
        self.last: datetime | None = None

    def note(self, event_id: Any, customer: Any, store_id: int | None, moment: datetime | None) -> None:
        """One row's event id, customer, store and time (whatever of them could be read)."""
        if store_id is not None:
            self.stores.add(store_id)
        if self.customers is not None and isinstance(customer, str):
            self.customers.add(customer.strip())
            if len(self.customers) > SCOPE_LIMIT:
                self.customers = None
        if self.events is not None and isinstance(event_id, str):
            self.events.add(event_id.strip())
            if len(self.events) > SCOPE_LIMIT:
                self.events = None
        if moment is not None:
            self.first = moment if self.first is None or moment < self.first else self.first
            self.last = moment if self.last is None or moment > self.last else self.last

    def as_dict(self) -> dict[str, Any]:
        return {"stores": sorted(self.stores), "from": self.first.isoformat() if self.first else None,
                "to": self.last.isoformat() if self.last else None,
                "customers": None if self.customers is None else sorted(self.customers),
                "event_ids": None if self.events is None else sorted(self.events)}


def missing_batches(session: Session, pilot_id: int, store_ids: list[int], start: datetime, end: datetime,
                    since: datetime) -> list[dict[str, Any]]:
    """The failed or rejected batches (started before `end`) whose rows are still missing and concerned
    the pilot: rows between `since` (the pre-period's start) and `end` from its enrolled stores or of
    its assigned customers. A batch without a scope (its worker died) counts when it started in
    [start, end). Missing: some of its event ids are not stored (from the same source); past the
    scope's limit, fewer rows stored from its source, stores and window than it had."""
    b = IngestionBatch
    out = []
    for batch in session.scalars(select(b).where(b.status.in_(("failed", "rejected")), b.started_at < end)
                                 .order_by(b.id)):
        scope = batch.scope
        if scope is None:
            if batch.started_at >= start:
                out.append(_named(batch, None))
            continue
        if scope["from"] is not None and (_time(scope["to"]) < since or _time(scope["from"]) >= end):
            continue  # (a batch none of whose rows had a good time may concern any window)
        if not (set(scope["stores"]) & set(store_ids) or _assigned(session, pilot_id, scope["customers"])):
            continue
        if _still_missing(session, batch):
            out.append(_named(batch, scope))
    return out


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _chunks(values: list[str], size: int = 500):
    for i in range(0, len(values), size):
        yield values[i:i + size]


def _assigned(session: Session, pilot_id: int, customers: list[str] | None) -> bool:
    from pilot.models import Assignment, Customer
    for part in _chunks(customers or []):
        if session.scalar(select(Assignment.customer_id).join(Customer, Customer.id == Assignment.customer_id)
                          .where(Assignment.pilot_id == pilot_id, Customer.external_id.in_(part)).limit(1)):
            return True
    return False


def _still_missing(session: Session, batch: IngestionBatch) -> bool:
    t, scope = CustomerEvent if batch.kind == "events" else Transaction, batch.scope
    if scope["event_ids"] is not None:
        stored = sum(session.scalar(select(func.count()).select_from(t).where(
            t.source == batch.source, t.event_id.in_(part))) or 0 for part in _chunks(scope["event_ids"]))
        return stored < len(scope["event_ids"])
    where = [t.source == batch.source, t.store_id.in_(scope["stores"])]
    if scope["from"] is not None:
        where += [t.occurred_at >= _time(scope["from"]), t.occurred_at <= _time(scope["to"])]
    return (session.scalar(select(func.count()).select_from(t).where(*where)) or 0) < batch.rows


def _named(batch: IngestionBatch, scope: dict[str, Any] | None) -> dict[str, Any]:
    """A missing batch as the report names it."""
    where = "" if scope is None else (f", rows from {(scope['from'] or '?')[:10]} to {(scope['to'] or '?')[:10]} "
                                      f"in {len(scope['stores'])} store(s)")
    return {"batch_id": batch.id, "source": batch.source, "status": batch.status, "rows": batch.rows,
            "started_at": batch.started_at.isoformat(), "from": scope and scope["from"], "to": scope and scope["to"],
            "message": f"batch {batch.id} ({batch.source}, {batch.status} {batch.started_at:%Y-%m-%d %H:%M}, "
                       f"{batch.rows} rows{where})"}
