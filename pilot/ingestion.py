"""Transactions in: one validation and one write path for JSON batches, streamed CSV and the CLI.

One path for every kind of row (`RowKind`: transactions here, customer events in pilot.events_feed).
Rows are checked one by one in Python (every bad row is reported with its number, field and
reason) and streamed into a temporary staging table: `COPY` on PostgreSQL, `executemany` on
SQLite, in chunks, so memory stays flat however large the file. Then a few set-based statements
create unknown customers, insert the staged rows in row order with `ON CONFLICT DO NOTHING` (so of
an event id repeated in the batch the first row is stored), and, unless every staged row was new,
compare every staged row with what is stored to count duplicates (same content) and conflicts (same
event id, other content; never applied). All of it happens in the
caller's transaction: a rejected or interrupted batch leaves nothing behind but its record.

The record is not part of that transaction (`batch`): it is written `running` in a short transaction
of its own when the batch starts, beats while rows stream in, and ends `accepted` in the caller's
transaction with the rows, or `rejected`/`failed` with the reason in another short transaction (on a
fresh connection when the first one died). A batch whose worker died stays `running` without a
heartbeat until `fail_stale_batches` ends it.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from time import monotonic, perf_counter
from typing import Any

from sqlalchemy import func, insert, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from pilot.data_quality import BatchScope
from pilot.db import utcnow
from pilot.errors import Invalid, PilotError, database_unavailable
from pilot.models import IngestionBatch, Store
from pilot.row_validation import RowErrors, csv_rows
from pilot.sqltime import sqlite_text, time_value

FIELDS = ("event_id", "customer", "store", "occurred_at", "type", "amount", "items", "discount_cost",
          "points_issued", "points_redeemed", "channel")
FIELD_SET = frozenset(FIELDS)
REQUIRED = ("event_id", "customer", "store", "occurred_at", "amount")
TYPES = ("sale", "refund")
CHANNELS = ("store", "online", "app", "phone")
ON_ERROR = ("reject_batch", "skip_rows")
MAX_AMOUNT = Decimal("1e9")
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
CHUNK = 5000
SAMPLE = 100
HEARTBEAT_SECONDS = 30  # a running batch's record says it is alive this often while its rows stream in
STAGING_COLUMNS = ("batch_row", "event_id", "customer", "store_id", "occurred_at", "type", "amount", "items",
                   "discount_cost", "points_issued", "points_redeemed", "channel")
KEY_COLUMNS = STAGING_COLUMNS[:3]

log = logging.getLogger(__name__)


class RowError(Exception):
    """One field of one row is wrong."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field_name, message


def _text(raw: dict, name: str, limit: int, required: bool = True) -> str | None:
    value = raw.get(name)
    if value is None or value == "":
        if required:
            raise RowError(name, "Missing value.")
        return None
    if not isinstance(value, str):
        if isinstance(value, bool) or not isinstance(value, int):
            raise RowError(name, "Not a string.")
        value = str(value)
    value = value.strip()
    if not value:
        if required:
            raise RowError(name, "Missing value.")
        return None
    if len(value) > limit:
        raise RowError(name, f"Longer than {limit} characters ({len(value)}).")
    if "\x00" in value:
        raise RowError(name, "Contains a NUL character (PostgreSQL text cannot hold it).")
    return value


def _number(raw: dict, name: str, required: bool = False, places: int | None = 4) -> Decimal | None:
    value = raw.get(name)
    if value is None or value == "":
        if required:
            raise RowError(name, "Missing value.")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise RowError(name, "Not a number.")
    try:
        number = Decimal(value.strip() if isinstance(value, str) else repr(value) if isinstance(value, float)
                         else value)
    except InvalidOperation:
        raise RowError(name, f"Not a number: {str(value)[:40]!r}.") from None
    if not number.is_finite() or abs(number) >= MAX_AMOUNT:
        raise RowError(name, f"Out of range: {str(value)[:40]!r}.")
    if places is not None and number.as_tuple().exponent < -places:
        raise RowError(name, f"More than {places} decimal places.")
    return number


def _integer(raw: dict, name: str, low: int, high: int) -> int:
    value = raw.get(name)
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        raise RowError(name, "Not a whole number.")
    if isinstance(value, float):
        if not value.is_integer():
            raise RowError(name, "Not a whole number.")
        value = int(value)
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise RowError(name, f"Not a whole number: {value[:40]!r}.") from None
    if not isinstance(value, int):
        raise RowError(name, "Not a whole number.")
    if not low <= value <= high:
        raise RowError(name, f"Must be between {low} and {high}.")
    return value


def _time(raw: dict, latest: datetime) -> datetime:
    value = raw.get("occurred_at")
    if value is None or value == "":
        raise RowError("occurred_at", "Missing value.")
    if not isinstance(value, str):
        raise RowError("occurred_at", "Not an ISO 8601 time string.")
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise RowError("occurred_at", f"Not an ISO 8601 time: {value[:40]!r}.") from None
    if moment.tzinfo is None:
        raise RowError("occurred_at", "No UTC offset; send e.g. 2026-11-02T10:15:00+01:00.")
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59:59-14:00 is past the last datetime once in UTC
        raise RowError("occurred_at", "Out of range (after conversion to UTC).") from None
    if moment > latest:
        raise RowError("occurred_at", "More than a day in the future.")
    if moment < EARLIEST:
        raise RowError("occurred_at", "Before 2000-01-01.")
    return moment


def check_record(raw: Any, fields: set[str] | frozenset[str]) -> None:
    """A raw row of any kind: an object of known fields, as wide as its CSV header."""
    if not isinstance(raw, dict):
        raise RowError("_row", "Not an object.")
    if "__width__" in raw:
        raise RowError("_row", f"Has {raw['__width__']} cells; the header has a different number.")
    unknown = raw.keys() - fields
    if unknown:
        raise RowError(sorted(unknown)[0], "Unknown field.")


def parse_row(raw: Any, stores: dict[str, int], latest: datetime) -> tuple:
    """One raw row (JSON object or CSV record) as a staging tuple without its row number."""
    check_record(raw, FIELD_SET)
    event_id = _text(raw, "event_id", 128)
    customer = _text(raw, "customer", 128)
    code = _text(raw, "store", 64)
    store_id = stores.get(code)
    if store_id is None:
        raise RowError("store", f"Unknown store {code!r}.")
    moment = _time(raw, latest)
    kind = _text(raw, "type", 8, required=False) or "sale"
    if kind not in TYPES:
        raise RowError("type", f"Must be one of {', '.join(TYPES)}.")
    amount = _number(raw, "amount", required=True)
    if kind == "sale" and amount < 0:
        raise RowError("amount", "A sale cannot be negative; send refunds with type 'refund'.")
    if kind == "refund" and amount > 0:
        raise RowError("amount", "A refund is a negative amount.")
    items = _integer(raw, "items", -10_000 if kind == "refund" else 0, 10_000)
    cost = _number(raw, "discount_cost")
    points_issued = _integer(raw, "points_issued", 0, 10_000_000)
    points_redeemed = _integer(raw, "points_redeemed", 0, 10_000_000)
    channel = _text(raw, "channel", 16, required=False) or "store"
    if channel not in CHANNELS:
        raise RowError("channel", f"Must be one of {', '.join(CHANNELS)}.")
    return (event_id, customer, store_id, moment, kind, amount, items, cost, points_issued, points_redeemed,
            channel)


@dataclass(frozen=True)
class RowKind:
    """One kind of row the path ingests: its fields, its parser and the table its rows go to.

    `parse(raw, stores, latest)` gives (event_id, customer, store_id, occurred_at, *rest) in the order of
    `columns` after event_id and customer, which are also the target table's columns, staged as `staging`
    declares them (`{moment}`: the dialect's time type) and all compared to find duplicates; `json_columns`
    are staged as JSON text.
    """

    name: str  # ingestion_batches.kind
    table: str
    fields: tuple[str, ...]
    required: tuple[str, ...]
    csv_fields: tuple[str, ...]
    parse: Callable[[Any, dict[str, int], datetime], tuple]
    columns: tuple[str, ...]
    staging: str
    to_sqlite: Callable[[tuple], tuple]
    json_columns: tuple[str, ...] = ()
    extra_prefix: str | None = None  # CSV columns `<prefix><name>` go into the row's attributes

    def csv_rows(self, stream: Any) -> Iterator[tuple[int, dict[str, Any]]]:
        """The CSV stream's rows of this kind (pilot.row_validation.csv_rows)."""
        if self.extra_prefix is None:
            return csv_rows(stream, self.required, self.csv_fields)
        return csv_rows(stream, self.required, self.csv_fields, extra_into="attributes",
                        extra_prefix=self.extra_prefix)


@dataclass
class Outcome:
    """What became of a batch."""

    batch_id: int
    rows: int = 0
    accepted: int = 0
    duplicates: int = 0
    conflicts: int = 0
    rejected: int = 0
    customers_created: int = 0
    conflict_rows: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    # wall seconds: reading, validating and staging the rows; then the set-based statements
    # that create customers, insert and compare (where an ingestion's time goes)
    timings: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Ingest:
    """Stage, validate and write one batch of rows (transactions unless `kind` says otherwise) inside the
    caller's transaction."""

    def __init__(self, session: Session, actor: str, method: str, source: str = "default",
                 on_error: str = "reject_batch", create_customers: bool = True, batch_id: int | None = None,
                 kind: RowKind | None = None) -> None:
        """`batch_id`: the record `open_batch` made (it then beats on a connection of its own); without it
        the record is made here, in the caller's transaction with the rows."""
        check_args(source, on_error)
        self.kind = kind or TRANSACTIONS
        self.session, self.source, self.on_error = session, source, on_error
        self.create_customers = create_customers
        self.dialect = session.bind.dialect.name
        self.pg = self.dialect == "postgresql"
        self.stores = dict(session.execute(select(Store.code, Store.id)).all())
        self.latest = utcnow() + timedelta(days=1)
        self.errors = RowErrors()
        self.scope = BatchScope()  # kept on the record of a batch that ends rejected or failed
        self.beats = batch_id is not None
        if batch_id is None:
            batch = IngestionBatch(source=source, actor=actor, method=method, on_error=on_error, status="running",
                                   kind=self.kind.name)
            session.add(batch)
            session.flush()
            batch_id = batch.id
        self.batch_id = batch_id
        self.beaten = monotonic()
        self.rows = 0
        self.staged = 0  # rows in the staging table
        self.pending: list[tuple] = []
        self.started = perf_counter()
        self._create_staging()

    # -- staging ------------------------------------------------------------------------------
    def _create_staging(self) -> None:
        moment = "TIMESTAMPTZ" if self.pg else "TEXT"
        self.session.execute(text("DROP TABLE IF EXISTS pilot_staging" if self.pg else
                                  "DROP TABLE IF EXISTS temp.pilot_staging"))
        self.session.execute(text(
            "CREATE TEMPORARY TABLE pilot_staging (batch_row INTEGER NOT NULL, event_id VARCHAR(128) NOT NULL, "
            f"customer VARCHAR(128) NOT NULL, {self.kind.staging.format(moment=moment)})"
            + (" ON COMMIT DROP" if self.pg else "")))

    def add(self, number: int, raw: Any) -> None:
        """Validate one row and queue it for staging (bad rows are reported, not staged)."""
        self.rows += 1
        try:
            row = self.kind.parse(raw, self.stores, self.latest)
        except RowError as exc:
            self.errors.add(number, exc.field, exc.message)
            if isinstance(raw, dict):  # what the bad row concerned, as far as it can be read
                code = raw.get("store")
                self.scope.note(raw.get("event_id"), raw.get("customer"),
                                self.stores.get(code.strip()) if isinstance(code, str) else None, _moment(raw))
            return
        self.scope.note(row[0], row[1], row[2], row[3])
        if self.errors.count and self.on_error == "reject_batch":
            return  # the batch is lost anyway: only keep validating
        self.pending.append((number, *row))
        if len(self.pending) >= CHUNK:
            self._flush()

    def add_all(self, rows: Iterable[tuple[int, Any]]) -> None:
        for number, raw in rows:
            self.add(number, raw)

    def _flush(self) -> None:
        if not self.pending:
            return
        if self.pg:
            raw = self.session.connection().connection.driver_connection
            columns = ", ".join((*KEY_COLUMNS, *self.kind.columns))
            with raw.cursor() as cur, cur.copy(f"COPY pilot_staging ({columns}) FROM STDIN") as cp:
                for row in self.pending:
                    cp.write_row(row)
        else:
            cursor = self.session.connection().connection.driver_connection.cursor()
            marks = ", ".join("?" * (len(KEY_COLUMNS) + len(self.kind.columns)))
            cursor.executemany(f"INSERT INTO temp.pilot_staging VALUES ({marks})",
                               [self.kind.to_sqlite(r) for r in self.pending])
            cursor.close()
        self.staged += len(self.pending)
        self.pending = []
        if self.beats and monotonic() - self.beaten >= HEARTBEAT_SECONDS:
            self._beat()

    def _beat(self) -> None:
        """Say the batch is alive, in a transaction of its own (the rows' is not visible to others)."""
        self.beaten = monotonic()
        try:
            with self.session.get_bind().begin() as conn:
                conn.execute(update(IngestionBatch).where(IngestionBatch.id == self.batch_id)
                             .values(heartbeat_at=utcnow()))
        except DBAPIError as exc:  # a missed beat loses nothing: the next may get through
            log.warning("ingestion batch %s: heartbeat not recorded: %s", self.batch_id, exc)

    # -- write --------------------------------------------------------------------------------
    def finish(self) -> Outcome:
        """Write the staged rows; raise a 422 listing every bad row when the batch is rejected."""
        self._flush()
        out = Outcome(batch_id=self.batch_id, rows=self.rows)
        if self.errors.count and self.on_error == "reject_batch":
            self._raise_rejected(out)
        # the record first, in the rows' transaction: on SQLite that takes the write lock before the
        # statements below read what they write; on PostgreSQL a stale-batch sweep waits for the outcome
        self.session.execute(update(IngestionBatch).where(IngestionBatch.id == self.batch_id)
                             .values(heartbeat_at=utcnow()))
        self.staged_at = perf_counter()
        out.timings["stage_seconds"] = round(self.staged_at - self.started, 6)
        sql = self.session.execute
        if self.pg:
            sql(text("ANALYZE pilot_staging"))
        if not self.create_customers:
            for number, customer in sql(text(
                    "SELECT s.batch_row, s.customer FROM pilot_staging s WHERE NOT EXISTS "
                    "(SELECT 1 FROM customers c WHERE c.external_id = s.customer) ORDER BY s.batch_row")):
                self.errors.add(number, "customer", f"Unknown customer {customer!r}.")
            if self.errors.count and self.on_error == "reject_batch":
                self._raise_rejected(out)
            self.staged -= sql(text(
                "DELETE FROM pilot_staging WHERE NOT EXISTS "
                "(SELECT 1 FROM customers c WHERE c.external_id = pilot_staging.customer)")).rowcount
        now = utcnow()
        empty = "CAST('{}' AS JSON)" if self.pg else "'{}'"
        out.customers_created = sql(text(
            "INSERT INTO customers (external_id, attributes, created_at, updated_at) "
            f"SELECT n.customer, {empty}, :now, :now FROM (SELECT DISTINCT s.customer FROM pilot_staging s "
            "WHERE NOT EXISTS (SELECT 1 FROM customers c WHERE c.external_id = s.customer)) n "
            "WHERE true ON CONFLICT (external_id) DO NOTHING"),
            {"now": time_value(now, self.dialect)}).rowcount
        kind = self.kind
        staged = ", ".join(f"CAST(s.{c} AS JSON)" if self.pg and c in kind.json_columns else f"s.{c}"
                           for c in kind.columns)
        out.accepted = sql(text(
            f"INSERT INTO {kind.table} (source, event_id, customer_id, {', '.join(kind.columns)}, batch_id, "
            f"batch_row, received_at) SELECT :source, s.event_id, c.id, {staged}, :batch, s.batch_row, :now "
            "FROM pilot_staging s JOIN customers c ON c.external_id = s.customer "
            # in row order, so of an event id sent twice in the batch the first row is stored (the
            # later ones meet it in the unique index) and then compared like any duplicate
            "ORDER BY s.batch_row "
            "ON CONFLICT (source, event_id) DO NOTHING"),
            {"source": self.source, "batch": self.batch_id, "now": time_value(now, self.dialect)}).rowcount
        if out.accepted == self.staged:  # every staged row is new: no duplicates or conflicts to look for
            return self._accepted(out)
        same = "IS NOT DISTINCT FROM" if self.pg else "IS"
        equal = " AND ".join((f"CAST(t.{c} AS TEXT)" if self.pg and c in kind.json_columns else f"t.{c}")
                             + f" {same} s.{c}" for c in kind.columns) + " AND t.customer_id = c.id"
        compare = ("FROM pilot_staging s JOIN customers c ON c.external_id = s.customer "
                   f"JOIN {kind.table} t ON t.source = :source AND t.event_id = s.event_id "
                   "WHERE NOT (t.batch_id = :batch AND t.batch_row = s.batch_row)")
        params = {"source": self.source, "batch": self.batch_id}
        out.duplicates, out.conflicts = sql(text(
            f"SELECT COALESCE(SUM(CASE WHEN {equal} THEN 1 ELSE 0 END), 0), "
            f"COALESCE(SUM(CASE WHEN {equal} THEN 0 ELSE 1 END), 0) {compare}"), params).one()
        if out.conflicts:
            out.conflict_rows = [{"row": r, "event_id": e, "stored_batch_id": b} for r, e, b in sql(text(
                f"SELECT s.batch_row, s.event_id, t.batch_id {compare} AND NOT ({equal}) "
                f"ORDER BY s.batch_row LIMIT {SAMPLE}"), params)]
        return self._accepted(out)

    def _accepted(self, out: Outcome) -> Outcome:
        out.timings["write_seconds"] = round(perf_counter() - self.staged_at, 6)
        out.rejected = self._rejected_rows()
        out.errors = self.errors.rows[:SAMPLE]
        self._close("accepted", out)
        return out

    def _rejected_rows(self) -> int:
        return len({e["row"] for e in self.errors.rows}) if not self.errors.count > len(self.errors.rows) \
            else self.errors.count

    def _close(self, status: str, out: Outcome) -> None:
        errors = (out.errors or self.errors.rows[:SAMPLE]) + [{"conflict": c} for c in out.conflict_rows[:10]]
        self.session.execute(update(IngestionBatch).where(IngestionBatch.id == self.batch_id).values(
            status=status, rows=out.rows, accepted=out.accepted, duplicates=out.duplicates, conflicts=out.conflicts,
            rejected=out.rejected, customers_created=out.customers_created, errors=errors, finished_at=utcnow()))
        if not self.pg:
            self.session.execute(text("DROP TABLE IF EXISTS temp.pilot_staging"))
        self.session.flush()

    def _raise_rejected(self, out: Outcome) -> None:
        out.rejected = self._rejected_rows()
        self.errors.raise_if_any(self.rows, extra={"rows_in_batch": self.rows, "rejected": out.rejected})


def _moment(raw: dict) -> datetime | None:
    """A bad row's time, if it has a good one."""
    try:
        return _time(raw, datetime.max.replace(tzinfo=UTC))
    except RowError:
        return None


def _sqlite_row(row: tuple) -> tuple:
    r = list(row)
    r[4] = sqlite_text(r[4])
    r[6] = float(r[6])
    r[8] = None if r[8] is None else float(r[8])
    return tuple(r)


TRANSACTIONS = RowKind(
    name="transactions", table="transactions", fields=FIELDS, required=REQUIRED, csv_fields=FIELDS, parse=parse_row,
    columns=STAGING_COLUMNS[3:], to_sqlite=_sqlite_row,
    staging="store_id INTEGER NOT NULL, occurred_at {moment} NOT NULL, type VARCHAR(8) NOT NULL, "
            "amount NUMERIC(16, 4) NOT NULL, items INTEGER NOT NULL, discount_cost NUMERIC(16, 4), "
            "points_issued INTEGER NOT NULL, points_redeemed INTEGER NOT NULL, channel VARCHAR(16) NOT NULL")


def check_args(source: str, on_error: str) -> None:
    """A 422 for a source or on_error a batch cannot have."""
    if on_error not in ON_ERROR:
        raise Invalid(f"on_error must be one of {', '.join(ON_ERROR)}.",
                       details={"fields": {"on_error": ["Not a valid choice."]}})
    if not source or len(source) > 64:
        raise Invalid("source must be 1 to 64 characters.", details={"fields": {"source": ["Bad length."]}})


@contextmanager
def batch(session: Session, actor: str, method: str, source: str = "default", on_error: str = "reject_batch",
          create_customers: bool = True, kind: RowKind | None = None) -> Iterator[Ingest]:
    """A batch being ingested, recorded `running` at once; the caller adds its rows, calls `finish()` and
    commits inside the block, so the rows and the batch's accepted record are one transaction the caller
    owns. A block that raises (bad rows, a cut body, a lost database — the commit included) stores no row:
    the batch's record ends rejected or failed with the reason (module docstring), and the error goes on."""
    check_args(source, on_error)
    engine = session.get_bind()
    kind = kind or TRANSACTIONS
    batch_id = open_batch(engine, source=source, actor=actor, method=method, on_error=on_error, kind=kind.name)
    ingest = None
    try:
        ingest = Ingest(session, actor, method, source, on_error, create_customers, batch_id=batch_id, kind=kind)
        yield ingest
    except BaseException as exc:
        _abandon(session)
        end_batch(engine, batch_id, {**_ending(exc, ingest.rows if ingest else 0),
                                     "scope": ingest.scope.as_dict() if ingest else None})
        if _rejection(exc):
            exc.details["batch_id"] = batch_id
        raise


def open_batch(engine: Engine, **values: Any) -> int:
    """Record a batch as running, committed at once (so it outlives any rollback of its rows); its id."""
    now = utcnow()
    with engine.begin() as conn:
        return conn.execute(insert(IngestionBatch).values(
            status="running", started_at=now, heartbeat_at=now, errors=[], **values)).inserted_primary_key[0]


def end_batch(engine: Engine, batch_id: int, values: dict[str, Any]) -> None:
    """End a running batch's record in a transaction of its own, on a fresh connection when the last one
    died; with the database out of reach the record stays running until `fail_stale_batches` ends it."""
    b = IngestionBatch
    for attempt in (1, 2):
        try:
            with engine.begin() as conn:
                # only while running: a commit whose answer was lost may have stored it accepted
                conn.execute(update(b).where(b.id == batch_id, b.status == "running")
                             .values(finished_at=utcnow(), **values))
            return
        except DBAPIError as exc:
            if attempt == 2 or not exc.connection_invalidated:
                log.error("ingestion batch %s: could not record it %s: %s", batch_id, values["status"], exc)
                return


def _abandon(session: Session) -> None:
    """Roll the batch's rows back; a connection that died meanwhile leaves the pool instead."""
    try:
        session.rollback()
    except DBAPIError:
        session.invalidate()


def _rejection(exc: BaseException) -> bool:
    return isinstance(exc, Invalid) and "rows_in_batch" in exc.details


def _ending(exc: BaseException, rows: int) -> dict[str, Any]:
    """How a batch that raised `exc` ends: rejected (its bad rows) or failed (the reason, without internals)."""
    if _rejection(exc):
        d = exc.details
        return {"status": "rejected", "rows": d["rows_in_batch"], "rejected": d["rejected"],
                "errors": d["rows"][:SAMPLE]}
    if isinstance(exc, PilotError):
        reason = exc.message
    elif database_unavailable(exc):
        reason = "The database connection was lost during the batch; nothing was stored."
    else:
        reason = "The batch broke off on an internal error (the server log has it); nothing was stored."
    return {"status": "failed", "rows": rows, "rejected": 0,
            "errors": [{"row": None, "field": "_batch", "message": reason}]}


def fail_stale_batches(session: Session, before: datetime) -> int:
    """End as failed every running batch whose last heartbeat (or start) is older than `before`: its
    worker died, or lost the database for good. The caller commits; the count of batches ended."""
    b = IngestionBatch
    reason = (f"No heartbeat since before {before.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC: the worker "
              "ingesting it stopped; nothing was stored.")
    return session.execute(update(b).where(b.status == "running", func.coalesce(b.heartbeat_at, b.started_at) < before)
                           .values(status="failed", finished_at=utcnow(),
                                   errors=[{"row": None, "field": "_batch", "message": reason}])
                           .execution_options(synchronize_session=False)).rowcount
