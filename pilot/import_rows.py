"""The rows of a historical pilot (pilot.pilot_import): its store enrolments — for a store pilot, the
arm each store ran in — and the checks every imported row shares (known fields, stage numbers, times
with a UTC offset). Bad rows go to a `RowErrors`; nothing here writes before the caller has seen them.

An enrolment names a store in its stage's scope, once per pilot (a live pilot enrols a store once, in
the stage that first reaches it). It is enrolled at its stage's start unless the row says when, and
stays to the end unless the row says it was withdrawn earlier: a store withdrawn before the cut-off is
left out of a store pilot's analysis, as in a live one.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from pilot import rollout
from pilot.errors import Invalid
from pilot.models import Enrolment, Pilot, Stage, Store
from pilot.row_validation import RowErrors

ENROLMENT_FIELDS = ("store", "stage", "arm", "enrolled_at", "withdrawn_at")
T = TypeVar("T")


class RowProblem(Exception):
    """One bad value of a row: the field and why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message


class Prefixed:
    """Row errors whose field names carry a prefix (the enrolment rows of a document)."""

    def __init__(self, errors: RowErrors, prefix: str) -> None:
        self.errors, self.prefix = errors, prefix

    def add(self, row: int, field: str, message: str) -> None:
        self.errors.add(row, self.prefix + field, message)


def utc_time(value: Any) -> datetime:
    """An ISO 8601 time with a UTC offset, in UTC (ValueError otherwise)."""
    if not isinstance(value, str):
        raise ValueError("Not an ISO 8601 time string.")
    moment = datetime.fromisoformat(value.strip())
    if moment.tzinfo is None:
        raise ValueError("No UTC offset; send e.g. 2026-11-02T10:15:00+01:00.")
    return moment.astimezone(UTC)


def stage_of(pilot: Pilot, value: Any) -> Stage:
    """The pilot's stage a row's `stage` number names (ValueError otherwise)."""
    try:
        position = int(value)
    except (TypeError, ValueError):
        raise ValueError("Not a stage number.") from None
    stage = pilot.stage(position)
    if stage is None or isinstance(value, bool) or str(value).strip() != str(position):
        raise ValueError(f"No stage {value!r}; the pilot has stages 1 to {len(pilot.stages)}.")
    return stage


def known_row(number: int, raw: Any, fields: tuple[str, ...], errors: Any) -> dict[str, Any] | None:
    """The row when it is an object of known fields with as many cells as the header; else None, reported."""
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


def enrolments(session: Session, pilot: Pilot, given: list[tuple[int, Any]] | None,
               errors: RowErrors) -> list[Enrolment]:
    """The enrolments to store: the given rows (number, record), checked, or (a customer pilot without
    them) each stage's scope stores not yet enrolled, enrolled at its start."""
    if given is None:
        out, have = [], set()
        for stage in pilot.stages:
            for store in rollout.scope_stores(session, stage):
                if store.id not in have:
                    have.add(store.id)
                    out.append(Enrolment(pilot=pilot, stage=stage, store=store, enrolled_at=stage.started_at,
                                         reason="imported"))
        return out
    stores = {s.code: s for s in session.scalars(select(Store))}
    scopes = {stage.position: {s.id for s in rollout.scope_stores(session, stage)} for stage in pilot.stages}
    return checked_rows(
        given, ENROLMENT_FIELDS, Prefixed(errors, "enrolments."), lambda row: _enrolment(pilot, row, stores, scopes),
        lambda e: e.store.id, lambda row, first: ("store", f"Store {row['store'].strip()!r} is enrolled already in "
                                                           f"row {first}."))


def checked_rows(rows: Iterable[tuple[int, Any]], fields: tuple[str, ...], errors: Any, build: Callable[[dict], T],
                 key: Callable[[T], Any], repeated: Callable[[dict, int], tuple[str, str]]) -> list[T]:
    """What `build` makes of each row (a RowProblem is reported), once per `key`: a later row of the same
    key is reported with the (field, message) of `repeated` (the row, the first row's number)."""
    seen: dict[Any, int] = {}
    out = []
    for number, raw in rows:
        row = known_row(number, raw, fields, errors)
        if row is None:
            continue
        try:
            thing = build(row)
        except RowProblem as exc:
            errors.add(number, exc.field, exc.message)
            continue
        first = seen.setdefault(key(thing), number)
        if first != number:
            errors.add(number, *repeated(row, first))
            continue
        out.append(thing)
    return out


def _enrolment(pilot: Pilot, row: dict[str, Any], stores: dict[str, Store], scopes: dict[int, set[int]]) -> Enrolment:
    code = row.get("store").strip() if isinstance(row.get("store"), str) else None
    store = stores.get(code)
    if store is None:
        raise RowProblem("store", f"Unknown store {row.get('store')!r}.")
    try:
        stage = stage_of(pilot, row.get("stage"))
    except ValueError as exc:
        raise RowProblem("stage", str(exc)) from None
    if store.id not in scopes[stage.position]:
        raise RowProblem("store", f"Store {code!r} is not in stage {stage.position}'s scope (its store and region "
                                  "codes).")
    arm = _arm(pilot, stage, row.get("arm"))
    times = {}
    for name in ("enrolled_at", "withdrawn_at"):
        try:
            times[name] = utc_time(row[name]) if row.get(name) not in (None, "") else None
        except ValueError as exc:
            raise RowProblem(name, str(exc)) from None
    enrolled, withdrawn = times["enrolled_at"] or stage.started_at, times["withdrawn_at"]
    end = pilot.stages[-1].ended_at
    if not stage.started_at <= enrolled < stage.ended_at:
        raise RowProblem("enrolled_at", f"Not within stage {stage.position} ({stage.started_at.isoformat()} to "
                                        f"{stage.ended_at.isoformat()}).")
    if withdrawn is not None and not enrolled < withdrawn <= end:
        raise RowProblem("withdrawn_at", f"Not after enrolled_at and by the pilot's end ({end.isoformat()}).")
    return Enrolment(pilot=pilot, stage=stage, store=store, arm=arm, enrolled_at=enrolled, reason="imported",
                     withdrawn_at=withdrawn if withdrawn != end else None)  # (there to the end: not withdrawn)


def _arm(pilot: Pilot, stage: Stage, value: Any) -> str | None:
    """A store pilot's enrolment names the arm the store ran in; a customer pilot's has none."""
    if pilot.unit != "store":
        if value not in (None, ""):
            raise RowProblem("arm", "Only a store pilot's stores have an arm; a customer pilot's customers do.")
        return None
    weighted = sorted(k for k, w in stage.allocation.items() if w > 0)
    if value in (None, ""):
        raise RowProblem("arm", f"Missing value: the arm the store ran in ({', '.join(weighted)}).")
    if not isinstance(value, str) or value.strip() not in weighted:
        raise RowProblem("arm", f"{value!r} is not a variant with weight in stage {stage.position} "
                                f"({', '.join(weighted)}).")
    return value.strip()


def check_store_arms(pilot: Pilot, enrolled: list[Enrolment]) -> None:
    """A 422 naming each stage of a store pilot that has no store in an arm it gives weight to: that arm
    cannot be compared."""
    problems = {}
    for stage in pilot.stages:
        arms = {e.arm for e in enrolled if e.stage is stage}
        missing = sorted(k for k, w in stage.allocation.items() if w > 0 and k not in arms)
        if missing:
            problems[f"stages.{stage.position}"] = [f"No store enrolled in arm(s) {', '.join(missing)}."]
    if problems:
        first = next(iter(problems))
        raise Invalid(f"Stage {first.split('.')[1]}: {problems[first][0]} A store pilot needs stores in every "
                      "arm of every stage; nothing was stored.", details={"fields": problems})
