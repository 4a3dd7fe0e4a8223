"""Historical pilots: a pilot that already ran elsewhere, brought in to be analysed like a live one.

A document names the programme (an existing key, or a new programme), the pilot's settings (its
`unit`: customer or store), its stages with their actual `started_at` and `ended_at`, the store
enrolments and the customer assignments with their exposure times (`exposed_at`: the exposure start
analyses use), as JSON rows or CSVs. A customer pilot needs its assignments (its enrolments default
to each stage's scope stores, enrolled when it started); a store pilot needs its enrolments, each
with the `arm` the store ran in, and every arm of every stage needs a store; its assignments are
optional and must give a customer its store's arm. Everything is checked before anything is
written, all or nothing: field errors name the field, and every bad enrolment or assignment row is
reported with its number, field and reason (pilot.import_rows). A key that is taken — an import sent
twice — is a 409. The pilot ends `completed` at its last stage's end, with `imported_at` set and an
`import` event in its timeline; it claims no layer.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC
from typing import Any

import marshmallow as ma
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from pilot import import_rows, rollout
from pilot.audit import record
from pilot.db import utcnow
from pilot.errors import Conflict, Invalid
from pilot.import_rows import ENROLMENT_FIELDS, RowProblem, checked_rows, stage_of, utc_time
from pilot.mechanics import MECHANICS
from pilot.metrics import CATALOGUE
from pilot.models import Assignment, Customer, Pilot, Programme, Store
from pilot.programmes import create_programme, get_programme
from pilot.row_validation import RowErrors

__all__ = ["ASSIGNMENT_FIELDS", "ENROLMENT_FIELDS", "ImportDocument", "import_pilot"]
ASSIGNMENT_FIELDS = ("customer", "variant", "stage", "exposed_at", "store")
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
    unit = ma.fields.String(load_default="customer", validate=ma.validate.OneOf(["customer", "store"]))
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


def import_pilot(session: Session, actor: str, document: Any, assignment_rows: Iterable[tuple[int, Any]] | None = None,
                 enrolment_rows: Iterable[tuple[int, Any]] | None = None) -> dict[str, Any]:
    """Bring in a pilot that already ran (module docstring); the caller commits. `assignment_rows` and
    `enrolment_rows` (number, record) from CSVs take the place of the document's lists."""
    try:
        doc = ImportDocument().load(document if isinstance(document, dict) else {"_": document})
    except ma.ValidationError as exc:
        raise Invalid("The pilot to import is not valid; nothing was stored.",
                      details={"fields": exc.messages}) from None
    _check_times(doc["stages"])
    _refuse_taken(session, doc["key"])
    programme = _programme(session, actor, doc["programme"])
    stages, given_enrolments, given_assignments = doc.pop("stages"), doc.pop("enrolments"), doc.pop("assignments")
    data = {**doc, "stages": [{k: v for k, v in s.items() if k not in ("started_at", "ended_at")}
                              | {"planned_start": s["started_at"].date(), "planned_end": s["ended_at"].date()}
                              for s in stages]}
    pilot = rollout.create_pilot(session, actor, programme, data, past_start=True)
    rows = _numbered(assignment_rows, given_assignments)
    enrolments = _numbered(enrolment_rows, given_enrolments)
    _require_rows(pilot.unit, rows, enrolments)
    for stage, given in zip(pilot.stages, stages):
        stage.started_at, stage.ended_at = given["started_at"].astimezone(UTC), given["ended_at"].astimezone(UTC)
    errors = RowErrors()
    enrolled = import_rows.enrolments(session, pilot, enrolments, errors)
    arms = {e.store.id: (e.store.code, e.arm) for e in enrolled} if pilot.unit == "store" else None
    values = _assignments(session, pilot, rows or [], errors, arms)
    errors.raise_if_any(len(rows or []) + len(enrolments or []),
                        extra={"assignments": len(rows or []), "enrolments": len(enrolments or [])})
    if pilot.unit == "store":
        import_rows.check_store_arms(pilot, enrolled)
    last = pilot.stages[-1]
    pilot.state, pilot.current_stage = "completed", last.position
    pilot.started_at, pilot.ended_at, pilot.imported_at = pilot.stages[0].started_at, last.ended_at, utcnow()
    session.add_all(enrolled)
    for i in range(0, len(values), 5000):
        session.execute(insert(Assignment), values[i:i + 5000])
    session.flush()
    summary = {"unit": pilot.unit, "stages": [{"position": s.position, "started_at": s.started_at.isoformat(),
                                               "ended_at": s.ended_at.isoformat()} for s in pilot.stages],
               "enrolments": len(enrolled), "assignments": len(values)}
    if arms is not None:
        summary["stores_per_arm"] = dict(sorted(Counter(arm for _, arm in arms.values()).items()))
    record(session, actor, "import", "pilot", pilot.key, after={"imported": True, **summary})
    return {"pilot": pilot.key, "state": pilot.state, "imported_at": pilot.imported_at, **summary}


def _numbered(csv_rows: Iterable[tuple[int, Any]] | None, listed: list[Any] | None) -> list[tuple[int, Any]] | None:
    """The rows with their numbers: a CSV's, else the document's list numbered from 1 (None: not sent)."""
    if csv_rows is not None:
        return list(csv_rows)
    return None if listed is None else list(enumerate(listed, start=1))


def _require_rows(unit: str, assignments: list | None, enrolments: list | None) -> None:
    """A customer pilot's history is its assignments; a store pilot's, its stores' arms."""
    if unit == "customer" and not assignments:
        raise Invalid("A pilot to import needs its assignments.",
                      details={"fields": {"assignments": ["Missing: send them in the document or as a CSV."]}})
    if unit == "store" and not enrolments:
        raise Invalid("A store pilot to import needs its enrolments: each store, its stage and the arm it ran in.",
                      details={"fields": {"enrolments": ["Missing: send them (store, stage, arm) in the document "
                                                         "or as a CSV."]}})


def _refuse_taken(session: Session, key: str) -> None:
    """A 409 when the key is taken; `already_imported` when by an imported pilot (the import sent again)."""
    taken = session.execute(select(Pilot.id, Pilot.imported_at).where(Pilot.key == key)).first()
    if taken is None:
        return
    if taken.imported_at is not None:
        raise Conflict(f"Pilot {key!r} exists already: it was imported at {taken.imported_at.isoformat()}. An "
                       "import is not repeated; nothing was stored.", code="already_imported",
                       details={"pilot": key, "imported_at": taken.imported_at.isoformat()})
    raise Conflict(f"Pilot {key!r} exists already; import the history under another key.")


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


def _assignments(session: Session, pilot: Pilot, rows: list[tuple[int, Any]], errors: RowErrors,
                 arms: dict[int, tuple[str, str]] | None) -> list[dict]:
    """The assignment rows as values to insert; bad rows go to `errors`. `arms` (store id → code, arm):
    a store pilot's stores, whose customers get their store's arm."""
    wanted = {r["customer"].strip() for _, r in rows if isinstance(r, dict) and isinstance(r.get("customer"), str)}
    customers: dict[str, tuple[int, int | None]] = {}
    ids = sorted(wanted)
    for i in range(0, len(ids), 1000):
        customers.update({e: (c, h) for e, c, h in session.execute(
            select(Customer.external_id, Customer.id, Customer.home_store_id)
            .where(Customer.external_id.in_(ids[i:i + 1000])))})
    stores = dict(session.execute(select(Store.code, Store.id)).all()) if rows else {}

    def build(row: dict[str, Any]) -> dict[str, Any]:
        values = _assignment(pilot, row, customers, stores)
        _store_arm(values, arms)
        return values

    return checked_rows(rows, ASSIGNMENT_FIELDS, errors, build, lambda v: v["customer_id"], lambda row, first: (
        "customer", f"Customer {row['customer']!r} is assigned already in row {first}."))


def _assignment(pilot: Pilot, row: dict[str, Any], customers: dict, stores: dict[str, int]) -> dict[str, Any]:
    for name in ("customer", "variant", "stage", "exposed_at"):
        if row.get(name) in (None, ""):
            raise RowProblem(name, "Missing value.")
    customer = customers.get(row["customer"].strip()) if isinstance(row["customer"], str) else None
    if customer is None:
        raise RowProblem("customer", f"Unknown customer {row['customer']!r}.")
    try:
        stage = stage_of(pilot, row["stage"])
    except ValueError as exc:
        raise RowProblem("stage", str(exc)) from None
    variant = row["variant"]
    if not isinstance(variant, str) or stage.allocation.get(variant.strip(), 0) <= 0:
        raise RowProblem("variant", f"{variant!r} is not a variant with weight in stage {stage.position} "
                                    f"({', '.join(k for k, w in sorted(stage.allocation.items()) if w > 0)}).")
    try:
        exposed = utc_time(row["exposed_at"])
    except ValueError as exc:
        raise RowProblem("exposed_at", str(exc)) from None
    if not stage.started_at <= exposed < stage.ended_at:
        raise RowProblem("exposed_at", f"Not within stage {stage.position} ({stage.started_at.isoformat()} to "
                                       f"{stage.ended_at.isoformat()}).")
    store_id = customer[1]
    if row.get("store") not in (None, ""):
        store_id = stores.get(row["store"].strip()) if isinstance(row["store"], str) else None
        if store_id is None:
            raise RowProblem("store", f"Unknown store {row['store']!r}.")
    return {"pilot_id": pilot.id, "customer_id": customer[0], "variant": variant.strip(), "stage": stage.position,
            "store_id": store_id, "assigned_at": exposed}


def _store_arm(values: dict[str, Any], arms: dict[int, tuple[str, str]] | None) -> None:
    """In a store pilot every customer of a store gets its arm: the row's variant must be it."""
    if arms is None:
        return
    store = arms.get(values["store_id"])
    if store is None:
        raise RowProblem("store", "The customer's store (the row's, else the home store) is not enrolled in the "
                                  "pilot.")
    if values["variant"] != store[1]:
        raise RowProblem("variant", f"{values['variant']!r} is not the arm of store {store[0]!r} ({store[1]}): "
                                    "in a store pilot a customer gets the store's arm.")
