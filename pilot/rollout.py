"""Pilots and stages: validation, lifecycle transitions and store enrolment, every step audited."""
from __future__ import annotations

import secrets
from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pilot import governance
from pilot.audit import record
from pilot.db import found, utcnow
from pilot.errors import Conflict, Invalid, NotFound, PilotError
from pilot.metric_definitions import is_metric_key
from pilot.models import CustomerGroup, Enrolment, Pilot, Programme, Region, Stage, Store
from pilot.models.pilots import LIVE_STATES
from pilot.store_randomisation import matched_arms, pre_period_values

DEFAULT_GATE = {"min_days": 14, "min_units_per_arm": 1000, "require_significant": True, "min_roi": 0.0,
                "no_guardrail_harm": True, "no_srm": True}
# a gate's minimum sample is counted in the pilot's unit (`sample_unit`): customers, or stores for a
# store-randomised pilot, whose default is a few stores per arm (migration 0013 moves existing ones)
DEFAULT_STORE_GATE = {**DEFAULT_GATE, "min_units_per_arm": 3}


def default_gate(unit: str) -> dict[str, Any]:
    """The gate a stage of a pilot randomised by `unit` starts from."""
    return {**(DEFAULT_STORE_GATE if unit == "store" else DEFAULT_GATE), "sample_unit": unit}


TRANSITIONS = {"start": ("draft",), "pause": ("running",), "resume": ("paused",), "advance": ("running",),
               "complete": ("running", "paused"), "rollback": ("running", "paused"),
               "cancel": ("draft", "running", "paused")}
TARGET = {"start": "running", "pause": "paused", "resume": "running", "advance": "running",
          "complete": "completed", "rollback": "rolled_back", "cancel": "cancelled"}
LOCKED_WHEN_LIVE = ("programme", "unit", "layer", "salt")


def pilot_dict(p: Pilot) -> dict[str, Any]:
    """A pilot's configuration as plain data (for audit and the API)."""
    return {"key": p.key, "name": p.name, "programme": p.programme.key, "unit": p.unit,
            "primary_metric": p.primary_metric, "guardrails": p.guardrails, "alpha": p.alpha, "power": p.power,
            "mde": p.mde, "margin_rate": p.margin_rate, "layer": p.layer, "state": p.state,
            "current_stage": p.current_stage, "stages": [stage_dict(s) for s in p.stages],
            "approval": p.approval, "independent_of": p.independent_of, "plan_version": p.plan_version}


def stage_dict(s: Stage) -> dict[str, Any]:
    """A stage as plain data."""
    return {"position": s.position, "name": s.name, "store_codes": s.store_codes, "region_codes": s.region_codes,
            "allocation": s.allocation, "eligible_groups": s.eligible_groups, "planned_start": s.planned_start,
            "planned_end": s.planned_end, "gate": s.gate, "started_at": s.started_at, "ended_at": s.ended_at}


def get_pilot(session: Session, key: str) -> Pilot:
    """The pilot with the key, or a 404."""
    return found(session, Pilot, f"No pilot {key!r}.", key=key)


def _unprocessable(message: str, field: str) -> PilotError:
    return Invalid(message, details={"fields": {field: [message]}})


def _check_metrics(data: dict[str, Any], session: Session) -> None:
    if "primary_metric" in data and not is_metric_key(session, data["primary_metric"]):
        raise _unprocessable(f"Unknown metric {data['primary_metric']!r}; see /api/v1/metrics.", "primary_metric")
    for g in data.get("guardrails", []):
        if not is_metric_key(session, g["metric"]):
            raise _unprocessable(f"Unknown guardrail metric {g['metric']!r}; see /api/v1/metrics.", "guardrails")


def stage_problems(session: Session, programme: Programme, data: dict[str, Any], position: int
                   ) -> list[dict[str, str]]:
    """Every problem of a stage's scope, allocation, groups and dates, as {"path", "message"} with the
    path by index (stages[0].allocation for stage 1)."""
    at, out = f"stages[{position - 1}]", []

    def problem(where: str, message: str) -> None:
        out.append({"path": f"{at}.{where}", "message": f"Stage {position}: {message}"})
    mechanics = {v.key: v.mechanic for v in programme.variants}
    unknown = sorted(set(data["allocation"]) - set(mechanics))
    if unknown:
        problem("allocation", f"allocation names unknown variant(s) {', '.join(unknown)}.")
    if abs(sum(data["allocation"].values()) - 1) > 1e-9:
        problem("allocation", "allocation weights must sum to 1.")
    controls = [k for k, w in data["allocation"].items() if mechanics.get(k) == "control" and w > 0]
    if not unknown and len(controls) != 1:
        problem("allocation", f"the allocation needs exactly one control variant with weight > 0 "
                              f"(found {len(controls)}).")
    for where, model, what in (("store_codes", Store, "store"), ("region_codes", Region, "region")):
        if missing := _missing_codes(session, model, data.get(where, [])):
            problem(where, f"unknown {what}(s) {', '.join(missing)}.")
    groups = data.get("eligible_groups")
    if groups is not None:
        known = set(session.scalars(select(CustomerGroup.key))) | {"other"}
        if set(groups) - known:
            problem("eligible_groups", f"unknown customer group(s) {', '.join(sorted(set(groups) - known))}.")
    start, end = data.get("planned_start"), data.get("planned_end")
    if start and end and end < start:
        problem("planned_end", "planned_end is before planned_start.")
    return out


def _regated(gate: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """A gate moved to another unit: the old unit's default sample becomes the new unit's."""
    out = {**(gate or {}), "sample_unit": new}
    if out.get("min_units_per_arm") == default_gate(old)["min_units_per_arm"]:
        out["min_units_per_arm"] = default_gate(new)["min_units_per_arm"]
    return out


def checked_stage(session: Session, programme: Programme, data: dict[str, Any], position: int,
                  unit: str = "customer") -> Stage:
    """A stage whose scope, allocation, groups and dates make sense (else a 422: `fields` names the stage
    with the first problem, as it always has; `errors` lists every problem by path)."""
    problems = stage_problems(session, programme, data, position)
    if problems:
        first = problems[0]["message"]
        raise Invalid(first, details={"fields": {f"stages.{position}": [first]}, "errors": problems})
    start, end, groups = data.get("planned_start"), data.get("planned_end"), data.get("eligible_groups")
    return Stage(position=position, name=data.get("name") or f"Stage {position}",
                 store_codes=data.get("store_codes", []), region_codes=data.get("region_codes", []),
                 allocation=data["allocation"], eligible_groups=groups, planned_start=start, planned_end=end,
                 gate={**default_gate(unit), **(data.get("gate") or {}), "sample_unit": unit})


def _missing_codes(session: Session, model: type, codes: list[str]) -> list[str]:
    if not codes:
        return []
    found = set(session.scalars(select(model.code).where(model.code.in_(codes))))
    return sorted(set(codes) - found)


def refuse_past_start(position: int, start: date | str | None) -> None:
    """A 422 for a stage not yet started whose planned start is before today (UTC): a pilot starts when
    it is started, so the date would be ignored; a pilot that already ran is imported instead."""
    start = date.fromisoformat(start) if isinstance(start, str) else start
    today = utcnow().date()
    if start is not None and start < today:
        message = (f"Stage {position}: planned_start {start} is in the past (today is {today} UTC). A live pilot "
                   "starts when it is started; plan today or later, or bring in a pilot that already ran with "
                   "POST /api/v1/pilots/import.")
        raise Invalid(message, code="planned_start_in_past",
                      details={"fields": {f"stages.{position}.planned_start": [message]},
                               "errors": [{"path": f"stages[{position - 1}].planned_start", "message": message}]})


def create_pilot(session: Session, actor: str, programme: Programme, data: dict[str, Any],
                 past_start: bool = False) -> Pilot:
    """A new draft pilot with its stages (`past_start`: a planned start before today is allowed, for
    synthetic retailers that move the start back themselves)."""
    if session.scalar(select(Pilot.id).where(Pilot.key == data["key"])):
        raise Conflict(f"Pilot {data['key']!r} exists already.")
    _check_metrics(data, session)
    governance.check_settings(session, None, data)
    unit = data.get("unit") or "customer"
    stages = [checked_stage(session, programme, s, i, unit) for i, s in enumerate(data.pop("stages"), start=1)]
    for stage in stages if not past_start else []:
        refuse_past_start(stage.position, stage.planned_start)
    data.pop("programme", None)
    pilot = Pilot(programme=programme, salt=data.pop("salt", None) or secrets.token_hex(8), stages=stages, **data)
    session.add(pilot)
    session.flush()
    record(session, actor, "create", "pilot", pilot.key, after=pilot_dict(pilot))
    return pilot


def update_pilot(session: Session, actor: str, pilot: Pilot, data: dict[str, Any]) -> Pilot:
    """Change a pilot's settings; unit, layer, salt and programme are fixed once it has run."""
    if pilot.state != "draft":
        locked = sorted(set(data) & set(LOCKED_WHEN_LIVE))
        if locked:
            raise Conflict(f"{', '.join(locked)} cannot change once the pilot has started "
                                "(it would move assigned units).", code="locked_when_live")
    governance.refuse_plan_change(pilot, data)
    governance.check_settings(session, pilot, data)
    _check_metrics(data, session)
    before = pilot_dict(pilot)
    if data.get("unit") and data["unit"] != pilot.unit:  # (a draft) its gates count the new unit
        for stage in pilot.stages:
            stage.gate = _regated(stage.gate, pilot.unit, data["unit"])
    for key, value in data.items():
        setattr(pilot, key, value)
    session.flush()
    record(session, actor, "update", "pilot", pilot.key, before=before, after=pilot_dict(pilot))
    return pilot


def update_stage(session: Session, actor: str, pilot: Pilot, position: int, data: dict[str, Any]) -> Stage:
    """Edit a stage; a running stage keeps its scope and variants so no assigned unit moves."""
    stage = pilot.stage(position)
    if stage is None:
        raise NotFound(f"Pilot {pilot.key!r} has no stage {position}.")
    live = pilot.state in LIVE_STATES
    if live and position < (pilot.current_stage or 0) or pilot.state in ("completed", "rolled_back", "cancelled"):
        raise Conflict("A finished stage cannot change.", code="stage_finished")
    if stage.started_at is None and "planned_start" in data and data["planned_start"] != stage.planned_start:
        refuse_past_start(position, data["planned_start"])
    merged = {**stage_dict(stage), **data}
    checked = checked_stage(session, pilot.programme, merged, position, pilot.unit)
    if "gate" in data:
        governance.refuse_plan_change(pilot, {}, {str(position): checked.gate})
    if live and position == pilot.current_stage:
        if set(checked.store_codes) != set(stage.store_codes) or set(checked.region_codes) != set(stage.region_codes):
            raise Conflict("The scope of the running stage cannot change; add a stage and advance instead.",
                           code="running_stage_scope")
        if set(checked.allocation) != set(stage.allocation):
            raise Conflict("The running stage cannot add or drop variants: assigned units would move. "
                                "Set a weight to 0 to stop new assignments.", code="running_stage_variants")
    before = stage_dict(stage)
    if live and position == pilot.current_stage and checked.allocation != stage.allocation:
        # units already assigned keep the weights of their time: the sample-ratio check needs them
        stage.allocation_log = [*stage.allocation_log, {"until": utcnow().isoformat(), "allocation": stage.allocation}]
    for key in ("name", "store_codes", "region_codes", "allocation", "eligible_groups", "planned_start",
                "planned_end", "gate"):
        setattr(stage, key, getattr(checked, key))
    session.flush()
    record(session, actor, "update", "stage", f"{pilot.key}/{position}", before=before, after=stage_dict(stage))
    return stage


def add_stage(session: Session, actor: str, pilot: Pilot, data: dict[str, Any]) -> Stage:
    """Append a stage (also to a live pilot: the next widening)."""
    if pilot.state not in ("draft", *LIVE_STATES):
        raise Conflict(f"A {pilot.state} pilot gets no new stages.", code="pilot_finished")
    refuse_past_start(len(pilot.stages) + 1, data.get("planned_start"))
    stage = checked_stage(session, pilot.programme, data, len(pilot.stages) + 1, pilot.unit)
    pilot.stages.append(stage)
    session.flush()
    record(session, actor, "create", "stage", f"{pilot.key}/{stage.position}", after=stage_dict(stage))
    return stage


def scope_stores(session: Session, stage: Stage) -> list[Store]:
    """The stores a stage's store and region codes resolve to."""
    stmt = select(Store).join(Region).where(Store.code.in_(stage.store_codes) | Region.code.in_(stage.region_codes))
    return list(session.scalars(stmt.order_by(Store.code)))


def active_enrolments(session: Session, pilot: Pilot) -> list[Enrolment]:
    """The pilot's enrolments not withdrawn."""
    stmt = select(Enrolment).where(Enrolment.pilot_id == pilot.id, Enrolment.withdrawn_at.is_(None))
    return list(session.scalars(stmt))


def enrol(session: Session, pilot: Pilot, stage: Stage) -> list[Enrolment]:
    """Enrol the stage's stores not yet in the pilot; refuse stores live in another pilot of the layer."""
    stores = scope_stores(session, stage)
    if not stores:
        raise Conflict(f"Stage {stage.position} has no stores in scope.", code="no_scope")
    have = {e.store_id for e in active_enrolments(session, pilot)}
    new = [s for s in stores if s.id not in have]
    busy = session.execute(select(Store.code, Pilot.key).join(Enrolment, Enrolment.store_id == Store.id)
                           .join(Pilot, Enrolment.pilot_id == Pilot.id)
                           .where(Store.id.in_([s.id for s in new]), Enrolment.withdrawn_at.is_(None),
                                  Pilot.layer == pilot.layer, Pilot.id != pilot.id,
                                  Pilot.state.in_(LIVE_STATES))).all()
    if busy:
        listed = ", ".join(f"{code} ({key})" for code, key in sorted(busy))
        raise Conflict(f"Store(s) already in a live pilot of layer {pilot.layer!r}: {listed}.",
                       code="store_in_other_pilot", details={"stores": sorted({c for c, _ in busy})})
    arms = _store_arms(session, pilot, stage, new)
    enrolments = [Enrolment(pilot=pilot, stage=stage, store=s, arm=arms.get(s.code), reason="enrolled") for s in new]
    session.add_all(enrolments)
    return enrolments


def _store_arms(session: Session, pilot: Pilot, stage: Stage, stores: list[Store]) -> dict[str, str]:
    if pilot.unit != "store":
        return {}
    values = pre_period_values(session, stores, pilot.started_at)
    return matched_arms([(s.code, s.region.code, values[s.code]) for s in stores], stage.allocation,
                        f"{pilot.salt}:stage{stage.position}")


def withdraw_all(session: Session, pilot: Pilot, reason: str) -> int:
    """Withdraw every active enrolment of the pilot with the reason."""
    now, count = utcnow(), 0
    for e in active_enrolments(session, pilot):
        e.withdrawn_at, e.reason = now, reason
        count += 1
    return count


def transition(session: Session, actor: str, pilot: Pilot, action: str, reason: str | None = None,
               override: bool = False, approval: Any = None) -> Pilot:
    """Apply a lifecycle action, checked and audited; an invalid one is a 409 naming the rule. Advance and
    complete hold to the stage's gate unless overridden with a reason (pilot.governance)."""
    if pilot.state not in TRANSITIONS[action]:
        raise Conflict(f"Cannot {action} a {pilot.state} pilot (allowed from: "
                            f"{', '.join(TRANSITIONS[action])}).", code="invalid_transition")
    governance.guard(session, actor, pilot, action, reason, override, approval)
    before = {"state": pilot.state, "current_stage": pilot.current_stage}
    now = utcnow()
    if action == "start":
        if pilot.stages:
            governance.refuse_overlap(session, actor, pilot, scope_stores(session, pilot.stages[0]))
        _start(session, pilot, now)
        governance.lock_plan(session, actor, pilot)
    elif action == "advance":
        if (nxt := pilot.stage((pilot.current_stage or 0) + 1)) is not None:
            governance.refuse_overlap(session, actor, pilot, scope_stores(session, nxt))
        _advance(session, pilot, now)
    elif action in ("complete", "rollback", "cancel"):
        if action == "rollback" and not reason:
            raise _unprocessable("A roll back needs a reason.", "reason")
        withdrawn = withdraw_all(session, pilot, reason or {"complete": "completed", "cancel": "cancelled"}[action])
        from pilot.assignment import release_layer
        release_layer(session, pilot)
        pilot.ended_at = now
        current = pilot.stage(pilot.current_stage)
        if current is not None and current.ended_at is None:
            current.ended_at = now
        before["withdrawn_enrolments"] = withdrawn
    pilot.state = TARGET[action]
    session.flush()
    record(session, actor, action, "pilot", pilot.key, before=before,
           after={"state": pilot.state, "current_stage": pilot.current_stage, "reason": reason})
    if action in ("pause", "advance"):
        from pilot import webhooks
        what = (f"paused ({reason or 'no reason given'})" if action == "pause"
                else f"advanced to stage {pilot.current_stage}")
        webhooks.emit(session, f"pilot.{'paused' if action == 'pause' else 'advanced'}",
                      {"pilot": pilot.key, "actor": actor, "reason": reason, **before, "state": pilot.state,
                       "current_stage": pilot.current_stage}, f"Pilot {pilot.key} {what} by {actor}.")
    return pilot


def _start(session: Session, pilot: Pilot, now) -> None:
    if not pilot.stages:
        raise Conflict("A pilot needs at least one stage to start.", code="no_stages")
    first = pilot.stages[0]
    mechanics = {v.key: v.mechanic for v in pilot.programme.variants}
    if not any(mechanics.get(k) == "control" and w > 0 for k, w in first.allocation.items()):
        raise Conflict("A pilot cannot start without a control variant.", code="no_control")
    pilot.started_at, pilot.current_stage, first.started_at = now, 1, now
    enrol(session, pilot, first)


def _advance(session: Session, pilot: Pilot, now) -> None:
    nxt = pilot.stage((pilot.current_stage or 0) + 1)
    if nxt is None:
        raise Conflict(f"Stage {pilot.current_stage} is the last stage; complete the pilot instead.",
                       code="last_stage")
    enrol(session, pilot, nxt)
    current = pilot.stage(pilot.current_stage)
    current.ended_at, nxt.started_at, pilot.current_stage = now, now, nxt.position


def store_status(session: Session, store: Store) -> list[dict[str, Any]]:
    """The live pilots a store is enrolled in, with what each means at the till."""
    from pilot.mechanics import describe
    stmt = select(Enrolment).join(Pilot).where(Enrolment.store_id == store.id, Enrolment.withdrawn_at.is_(None),
                                               Pilot.state.in_(LIVE_STATES))
    out = []
    for e in session.scalars(stmt.order_by(Enrolment.enrolled_at)):
        pilot, stage = e.pilot, e.pilot.stage(e.pilot.current_stage)
        variants = {v.key: v for v in pilot.programme.variants}
        if pilot.unit == "store":
            v = variants[e.arm]
            role = "control" if v.mechanic == "control" else "treatment"
            till = [{"variant": v.key, "name": v.name, "share": 1.0, "description": describe(v.mechanic, v.parameters)}]
        else:
            role = "customer_randomised"
            till = [{"variant": k, "name": variants[k].name, "share": w,
                     "description": describe(variants[k].mechanic, variants[k].parameters)}
                    for k, w in sorted(stage.allocation.items()) if w > 0]
        out.append({"pilot": pilot.key, "pilot_name": pilot.name, "programme": pilot.programme.name,
                    "state": pilot.state, "unit": pilot.unit, "stage": stage.position, "stage_name": stage.name,
                    "role": role, "arm": e.arm, "since": e.enrolled_at, "planned_end": stage.planned_end,
                    "eligible_groups": stage.eligible_groups, "at_the_till": till})
    return out
