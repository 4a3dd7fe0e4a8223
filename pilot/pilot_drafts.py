"""Drafting a pilot: every problem of a whole submission at once (the API stops at the first), a draft saved
as a whole (its stages replaced: changed, added, removed), what a stage's scope holds (stores, customers,
eligible customers) and live pilots of another layer there."""
from __future__ import annotations

from typing import Any

import marshmallow as ma
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pilot import rollout
from pilot.audit import record
from pilot.customer_groups import group_case, saved_groups
from pilot.errors import Conflict, Invalid, field_paths
from pilot.models import Customer, Enrolment, Pilot, Programme, Region, Store
from pilot.models.pilots import LIVE_STATES
from pilot.pilot_schemas import PilotIn, StageIn


def check_pilot(session: Session, body: dict[str, Any], existing: Pilot | None = None
                ) -> tuple[dict[str, Any] | None, list[dict[str, str]]]:
    """The pilot `body` (as POST /api/v1/pilots takes it) loaded by the API's schemas and checked by the
    domain's rules, with every problem as {"path", "message"} (paths as the API's: stages[0].allocation);
    the data is None when there is any problem. `existing`: the draft being edited (its key is its own)."""
    problems: list[dict[str, str]] = []
    try:
        data = PilotIn(exclude=("stages",)).load({k: v for k, v in body.items() if k != "stages"})
    except ma.ValidationError as exc:
        problems += field_paths(exc.messages)
        data = {}
    stages = []
    for i, stage in enumerate(body.get("stages") or []):
        try:
            stages.append(StageIn().load(stage))
        except ma.ValidationError as exc:
            problems += field_paths({"stages": {i: exc.messages}})
            stages.append(None)
    if not stages:
        problems.append({"path": "stages", "message": "A pilot needs at least one stage."})
    programme = existing.programme if existing is not None else session.scalar(
        select(Programme).where(Programme.key == body.get("programme")))
    if programme is None:
        problems.append({"path": "programme", "message": "Choose a programme."})
    if existing is None and data.get("key") and session.scalar(select(Pilot.id).where(Pilot.key == data["key"])):
        problems.append({"path": "key", "message": f"A pilot with the key {data['key']!r} exists already."})
    for position, stage in enumerate(stages, start=1):
        if stage is None or programme is None:
            continue
        problems += _stage_problems(session, programme, stage, position)
    if problems:
        return None, problems
    return {**data, "programme": programme.key, "stages": stages}, []


def save_draft(session: Session, actor: str, pilot: Pilot, data: dict[str, Any]) -> Pilot:
    """Change a draft's settings and, when `data` has `stages` (each as StageIn loads it), replace its stages
    by that list: stage N becomes the list's N-th (changed in place), new ones are added, those past the list
    removed, each audited. Every stage is checked before anything changes (a 422 lists every problem). A
    started pilot keeps its stages: they change one at a time, and the running one keeps its scope and
    variants (PATCH …/stages/{n}, pilot.rollout.update_stage)."""
    stages = data.get("stages")
    if stages is not None and pilot.state != "draft":
        raise Conflict("A started pilot's stages change one at a time (PATCH /api/v1/pilots/{key}/stages/{n}); "
                       "the running stage keeps its stores and variants, so no assigned customer moves.",
                       code="locked_when_live", details={"fields": {"stages": ["Fixed once the pilot started."]}})
    if stages is not None:
        problems = [p for position, stage in enumerate(stages, start=1)
                    for p in _stage_problems(session, pilot.programme, stage, position)]
        if problems:
            first = problems[0]["message"]
            raise Invalid(first, details={"fields": {"stages": [p["message"] for p in problems]}, "errors": problems})
    settings = {k: v for k, v in data.items() if k not in ("key", "programme", "stages")
                and not (k == "salt" and v is None)}  # (the form's: no salt typed keeps the draft's)
    if settings:
        rollout.update_pilot(session, actor, pilot, settings)
    for position, stage in enumerate(stages or [], start=1):
        stage = {"name": f"Stage {position}", **stage}
        if pilot.stage(position) is None:
            rollout.add_stage(session, actor, pilot, stage)
        else:
            rollout.update_stage(session, actor, pilot, position, stage)
    for gone in pilot.stages[len(stages):] if stages is not None else []:
        record(session, actor, "delete", "stage", f"{pilot.key}/{gone.position}", before=rollout.stage_dict(gone))
        pilot.stages.remove(gone)
    session.flush()
    return pilot


def _stage_problems(session: Session, programme: Programme, stage: dict[str, Any], position: int
                    ) -> list[dict[str, str]]:
    """Every problem of a stage not yet started: the domain's rules and a planned start in the past."""
    problems = rollout.stage_problems(session, programme, stage, position)
    try:
        rollout.refuse_past_start(position, stage.get("planned_start"))
    except Invalid as exc:
        problems += exc.details["errors"]
    return problems


def scope_counts(session: Session, store_codes: list[str], region_codes: list[str],
                 eligible_groups: list[str] | None) -> dict[str, int]:
    """How many stores a scope holds, how many customers have their home store there, and how many of
    them are in the eligible groups (all of them when `eligible_groups` is None)."""
    in_scope = select(Store.id).join(Region).where(Store.code.in_(store_codes) | Region.code.in_(region_codes))
    stores = session.scalar(select(func.count()).select_from(in_scope.subquery()))
    customers = select(func.count()).select_from(Customer).where(Customer.home_store_id.in_(in_scope))
    total = session.scalar(customers)
    eligible = total if eligible_groups is None else session.scalar(
        customers.where(group_case(saved_groups(session)).in_(eligible_groups or [""])))
    return {"stores": stores, "customers": total, "eligible": eligible}


def layer_conflicts(session: Session, layer: str, store_codes: list[str], region_codes: list[str],
                    own_key: str | None = None) -> list[dict[str, Any]]:
    """Live pilots of another layer enrolled in stores of the scope: their customers could be in both."""
    in_scope = select(Store.id).join(Region).where(Store.code.in_(store_codes) | Region.code.in_(region_codes))
    stmt = (select(Pilot.key, Pilot.layer, func.count(Enrolment.id)).join(Enrolment, Enrolment.pilot_id == Pilot.id)
            .where(Pilot.state.in_(LIVE_STATES), Pilot.layer != layer, Enrolment.withdrawn_at.is_(None),
                   Enrolment.store_id.in_(in_scope))
            .group_by(Pilot.key, Pilot.layer).order_by(Pilot.key))
    return [{"pilot": k, "layer": lay, "stores": n} for k, lay, n in session.execute(stmt) if k != own_key]


def layers(session: Session) -> list[str]:
    """The layers pilots use, most used first."""
    stmt = select(Pilot.layer, func.count()).group_by(Pilot.layer).order_by(func.count().desc(), Pilot.layer)
    return [layer for layer, _ in session.execute(stmt)] or ["default"]
