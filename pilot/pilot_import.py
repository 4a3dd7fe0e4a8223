"""Historical pilots: a pilot that already ran elsewhere, brought in to be analysed like a live one.

A document names the programme (an existing key, or a new programme), the pilot's settings, its
stages with their actual `started_at` and `ended_at`, optionally the store enrolments (by default the
scope stores of each stage, enrolled when it started) and the assignments with their exposure times
(`exposed_at`: the exposure start analyses use), as JSON rows or a CSV. Everything is checked
before anything is written, all or nothing: field errors name the field, and every bad enrolment or
assignment row is reported with its number, field and reason. The pilot ends `completed` at its last
stage's end, with `imported_at` set and an `import` event in its timeline; it claims no layer.
"""
from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import marshmallow as ma
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from pilot import rollout
from pilot.audit import record
from pilot.db import utcnow
from pilot.errors import Invalid
from pilot.mechanics import MECHANICS
from pilot.metrics import CATALOGUE
from pilot.models import Assignment, Customer, Enrolment, Pilot, Programme, Store
from pilot.programmes import create_programme, get_programme
from pilot.row_validation import RowErrors

ASSIGNMENT_FIELDS = ("customer", "variant", "stage", "exposed_at", "store")
ENROLMENT_FIELDS = ("store", "stage", "enrolled_at", "withdrawn_at")
CODE = ma.validate.Regexp(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", error="1-64 letters, digits, _ . -")
METRIC = ma.validate.OneOf(list(CATALOGUE))


class _Strict(ma.Schema):
    class Meta:
        unknown = ma.RAISE


class _Variant(_Strict):
    key = ma.fields.String(required=True, validate=CODE)
    name = ma.fields.String(load_default=None, validate=ma.validate.Length(1, 200))
    mechanic = ma.fields.String(required=True, validate=ma.validate.OneOf(MECHANICS))
    parameters = ma.fields.Dict(keys=ma.fields.String(), load_default=dict)


class _Programme(_Strict):
    key = ma.fields.String(required=True, validate=CODE)
    name = ma.fields.String(required=True, validate=ma.validate.Length(1, 200))
    description = ma.fields.String(load_default="", validate=ma.validate.Length(max=2000))
    variants = ma.fields.List(ma.fields.Nested(_Variant), required=True, validate=ma.validate.Length(1, 20))


class _Guardrail(_Strict):
    metric = ma.fields.String(required=True, validate=METRIC)
    max_harm = ma.fields.Float(load_default=0.0, validate=ma.validate.Range(0, 1))


class _Stage(_Strict):
    name = ma.fields.String(validate=ma.validate.Length(1, 200))
    store_codes = ma.fields.List(ma.fields.String(), load_default=list)
    region_codes = ma.fields.List(ma.fields.String(), load_default=list)
    allocation = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Float(validate=ma.validate.Range(0, 1)),
                                required=True)
    eligible_groups = ma.fields.List(ma.fields.String(), load_default=None, allow_none=True)
    gate = ma.fields.Dict(load_default=dict)
    started_at = ma.fields.AwareDateTime(required=True)
    ended_at = ma.fields.AwareDateTime(required=True)


class ImportDocument(_Strict):
    """A historical pilot: the pilot's settings as for a live one, stages with actual times, rows."""

    key = ma.fields.String(required=True, validate=CODE)
    name = ma.fields.String(required=True, validate=ma.validate.Length(1, 200))
    programme = ma.fields.Raw(required=True, metadata={"description": "A programme key, or a new programme"})
    unit = ma.fields.String(load_default="customer", validate=ma.validate.OneOf(["customer"]))
    primary_metric = ma.fields.String(load_default="spend_per_customer", validate=METRIC)
    guardrails = ma.fields.List(ma.fields.Nested(_Guardrail), load_default=list)
    alpha = ma.fields.Float(load_default=0.05, validate=ma.validate.Range(0.001, 0.5))
    power = ma.fields.Float(load_default=0.8, validate=ma.validate.Range(0.5, 0.999))
    mde = ma.fields.Float(load_default=0.02, validate=ma.validate.Range(0.0001, 10))
    margin_rate = ma.fields.Float(load_default=0.3, validate=ma.validate.Range(0.001, 1))
    layer = ma.fields.String(load_default="default", validate=CODE)
    salt = ma.fields.String(load_default=None, validate=ma.validate.Length(1, 64))
    stages = ma.fields.List(ma.fields.Nested(_Stage), required=True, validate=ma.validate.Length(1, 20))
    enrolments = ma.fields.List(ma.fields.Raw(), load_default=None)
    assignments = ma.fields.List(ma.fields.Raw(), load_default=None)


def import_pilot(session: Session, actor: str, document: Any,
                 assignment_rows: Iterable[tuple[int, Any]] | None = None) -> dict[str, Any]:
    """Bring in a pilot that already ran (module docstring); the caller commits. `assignment_rows`
    (number, record) from a CSV take the place of the document's `assignments`."""
    try:
        doc = ImportDocument().load(document if isinstance(document, dict) else {"_": document})
    except ma.ValidationError as exc:
        raise Invalid("The pilot to import is not valid; nothing was stored.",
                      details={"fields": exc.messages}) from None
    _check_times(doc["stages"])
    programme = _programme(session, actor, doc["programme"])
    stages, given_enrolments, given_assignments = doc.pop("stages"), doc.pop("enrolments"), doc.pop("assignments")
    data = {**doc, "stages": [{k: v for k, v in s.items() if k not in ("started_at", "ended_at")}
                              | {"planned_start": s["started_at"].date(), "planned_end": s["ended_at"].date()}
                              for s in stages]}
    pilot = rollout.create_pilot(session, actor, programme, data, past_start=True)
    rows = list(assignment_rows) if assignment_rows is not None else list(enumerate(given_assignments or [], 1))
    if not rows:
        raise Invalid("A pilot to import needs its assignments.",
                      details={"fields": {"assignments": ["Missing: send them in the document or as a CSV."]}})
    for stage, given in zip(pilot.stages, stages):
        stage.started_at, stage.ended_at = given["started_at"].astimezone(UTC), given["ended_at"].astimezone(UTC)
    errors = RowErrors()
    enrolled = _enrolments(session, pilot, given_enrolments, errors)
    values = _assignments(session, pilot, rows, errors)
    errors.raise_if_any(len(rows) + len(given_enrolments or []),
                        extra={"assignments": len(rows), "enrolments": len(given_enrolments or [])})
    last = pilot.stages[-1]
    pilot.state, pilot.current_stage = "completed", last.position
    pilot.started_at, pilot.ended_at, pilot.imported_at = pilot.stages[0].started_at, last.ended_at, utcnow()
    session.add_all(enrolled)
    for i in range(0, len(values), 5000):
        session.execute(insert(Assignment), values[i:i + 5000])
    session.flush()
    summary = {"stages": [{"position": s.position, "started_at": s.started_at.isoformat(),
                           "ended_at": s.ended_at.isoformat()} for s in pilot.stages],
               "enrolments": len(enrolled), "assignments": len(values)}
    record(session, actor, "import", "pilot", pilot.key, after={"imported": True, **summary})
    return {"pilot": pilot.key, "state": pilot.state, "imported_at": pilot.imported_at, **summary}


def _check_times(stages: list[dict[str, Any]]) -> None:
    """Each stage ends after it starts and no later than now; stages follow one another."""
    now = utcnow()
    for i, s in enumerate(stages, start=1):
        problem = ("ended_at is not after started_at" if s["ended_at"] <= s["started_at"] else
                   "ended_at is in the future: import a pilot that has run" if s["ended_at"] > now else
                   "started_at is before the previous stage ended" if i > 1 and
                   s["started_at"] < stages[i - 2]["ended_at"] else None)
        if problem:
            raise Invalid(f"Stage {i}: {problem}.", details={"fields": {f"stages.{i}": [problem]}})


def _programme(session: Session, actor: str, given: Any) -> Programme:
    if isinstance(given, str):
        return get_programme(session, given)
    try:
        return create_programme(session, actor, _Programme().load(given if isinstance(given, dict) else {}))
    except ma.ValidationError as exc:
        raise Invalid("The programme is not valid; nothing was stored.",
                      details={"fields": {"programme": exc.messages}}) from None


def _time(value: Any) -> datetime:
    """An ISO 8601 time with a UTC offset, in UTC (ValueError otherwise)."""
    if not isinstance(value, str):
        raise ValueError("Not an ISO 8601 time string.")
    moment = datetime.fromisoformat(value.strip())
    if moment.tzinfo is None:
        raise ValueError("No UTC offset; send e.g. 2026-11-02T10:15:00+01:00.")
    return moment.astimezone(UTC)


def _stage_of(pilot: Pilot, value: Any):
    try:
        position = int(value)
    except (TypeError, ValueError):
        raise ValueError("Not a stage number.") from None
    stage = pilot.stage(position)
    if stage is None or isinstance(value, bool) or str(value).strip() != str(position):
        raise ValueError(f"No stage {value!r}; the pilot has stages 1 to {len(pilot.stages)}.")
    return stage


def _row(number: int, raw: Any, fields: tuple[str, ...], errors: Any) -> dict[str, Any] | None:
    if not isinstance(raw, dict):
        errors.add(number, "_row", "Not an object.")
        return None
    if "__width__" in raw:
        errors.add(number, "_row", f"Has {raw['__width__']} cells; the header has a different number.")
        return None
    unknown = sorted(raw.keys() - set(fields))
    if unknown:
        errors.add(number, unknown[0], "Unknown field.")
        return None
    return raw


def _assignments(session: Session, pilot: Pilot, rows: list[tuple[int, Any]], errors: RowErrors) -> list[dict]:
    """The assignment rows as values to insert; bad rows go to `errors`."""
    wanted = {r["customer"].strip() for _, r in rows if isinstance(r, dict) and isinstance(r.get("customer"), str)}
    customers: dict[str, tuple[int, int | None]] = {}
    ids = sorted(wanted)
    for i in range(0, len(ids), 1000):
        customers.update({e: (c, h) for e, c, h in session.execute(
            select(Customer.external_id, Customer.id, Customer.home_store_id)
            .where(Customer.external_id.in_(ids[i:i + 1000])))})
    stores = dict(session.execute(select(Store.code, Store.id)).all())
    seen: dict[int, int] = {}
    out = []
    for number, raw in rows:
        row = _row(number, raw, ASSIGNMENT_FIELDS, errors)
        if row is None:
            continue
        try:
            values = _assignment(pilot, row, customers, stores)
        except _RowProblem as exc:
            errors.add(number, exc.field, exc.message)
            continue
        first = seen.setdefault(values["customer_id"], number)
        if first != number:
            errors.add(number, "customer", f"Customer {row['customer']!r} is assigned already in row {first}.")
            continue
        out.append(values)
    return out


class _Prefixed:
    """Row errors whose field names carry a prefix (the enrolment rows of a document)."""

    def __init__(self, errors: RowErrors, prefix: str) -> None:
        self.errors, self.prefix = errors, prefix

    def add(self, row: int, field: str, message: str) -> None:
        self.errors.add(row, self.prefix + field, message)


class _RowProblem(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message


def _assignment(pilot: Pilot, row: dict[str, Any], customers: dict, stores: dict[str, int]) -> dict[str, Any]:
    for name in ("customer", "variant", "stage", "exposed_at"):
        if row.get(name) in (None, ""):
            raise _RowProblem(name, "Missing value.")
    customer = customers.get(row["customer"].strip()) if isinstance(row["customer"], str) else None
    if customer is None:
        raise _RowProblem("customer", f"Unknown customer {row['customer']!r}.")
    try:
        stage = _stage_of(pilot, row["stage"])
    except ValueError as exc:
        raise _RowProblem("stage", str(exc)) from None
    variant = row["variant"]
    if not isinstance(variant, str) or stage.allocation.get(variant.strip(), 0) <= 0:
        raise _RowProblem("variant", f"{variant!r} is not a variant with weight in stage {stage.position} "
                                     f"({', '.join(k for k, w in sorted(stage.allocation.items()) if w > 0)}).")
    try:
        exposed = _time(row["exposed_at"])
    except ValueError as exc:
        raise _RowProblem("exposed_at", str(exc)) from None
    if not stage.started_at <= exposed < stage.ended_at:
        raise _RowProblem("exposed_at", f"Not within stage {stage.position} ({stage.started_at.isoformat()} to "
                                        f"{stage.ended_at.isoformat()}).")
    store_id = customer[1]
    if row.get("store") not in (None, ""):
        store_id = stores.get(row["store"].strip()) if isinstance(row["store"], str) else None
        if store_id is None:
            raise _RowProblem("store", f"Unknown store {row['store']!r}.")
    return {"pilot_id": pilot.id, "customer_id": customer[0], "variant": variant.strip(), "stage": stage.position,
            "store_id": store_id, "assigned_at": exposed}


def _enrolments(session: Session, pilot: Pilot, given: list[Any] | None, errors: RowErrors) -> list[Enrolment]:
    """The given enrolment rows, or each stage's scope stores not yet enrolled, enrolled at its start;
    all withdrawn when the last stage ended."""
    end = pilot.stages[-1].ended_at
    if given is None:
        out, have = [], set()
        for stage in pilot.stages:
            for store in rollout.scope_stores(session, stage):
                if store.id not in have:
                    have.add(store.id)
                    out.append(Enrolment(pilot=pilot, stage=stage, store=store, enrolled_at=stage.started_at,
                                         withdrawn_at=end, reason="imported"))
        return out
    stores = {s.code: s for s in session.scalars(select(Store))}
    bad = _Prefixed(errors, "enrolments.")  # (their row numbers count the enrolments, from 1)
    out = []
    for number, raw in enumerate(given, start=1):
        row = _row(number, raw, ENROLMENT_FIELDS, bad)
        if row is None:
            continue
        store = stores.get(row.get("store")) if isinstance(row.get("store"), str) else None
        if store is None:
            bad.add(number, "store", f"Unknown store {row.get('store')!r}.")
            continue
        try:
            stage = _stage_of(pilot, row.get("stage"))
        except ValueError as exc:
            bad.add(number, "stage", str(exc))
            continue
        try:
            enrolled = _time(row["enrolled_at"]) if row.get("enrolled_at") else stage.started_at
            withdrawn = _time(row["withdrawn_at"]) if row.get("withdrawn_at") else end
        except ValueError as exc:
            bad.add(number, "enrolled_at", str(exc))
            continue
        if not stage.started_at <= enrolled <= withdrawn:
            bad.add(number, "enrolled_at", "Not within its stage, or after withdrawn_at.")
            continue
        out.append(Enrolment(pilot=pilot, stage=stage, store=store, enrolled_at=enrolled, withdrawn_at=withdrawn,
                             reason="imported"))
    return out
