"""The data-quality report: rows per day and per store, late events, rejected rows per ingestion batch."""
from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Integer, cast, func, select
from sqlalchemy.orm import Session

from pilot.errors import Invalid, NotFound
from pilot.models import IngestionBatch, Store, Transaction
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
