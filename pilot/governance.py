"""Governed rollout: gates that hold, the pre-registered analysis plan, no silent overlap, approvals.

- Gates: `advance` and `complete` check the current stage's gate against the latest finished analysis of
  that stage, which must be fresh (its cut-off within PILOT_GATE_FRESHNESS_HOURS, default 24, and of the
  pilot's current plan version). Unmet: 409 `gate_not_met` listing each condition with its numbers,
  unless the caller overrides with a written reason (audited as `override_gate`).
- Plan: primary metric, guardrails, α, power, MDE, the stages' gates and the covariates lock at the start
  (plan version 1); a change after it is a 409 `analysis_plan_locked` unless made as an amendment with a
  reason, which makes the next plan version. Analysis runs record the version they used.
- Overlap: starting or advancing into stores (or customers) that a live pilot of the same programme kind
  (a treatment mechanic in common) in another layer holds is a 409 `overlapping_pilot`, unless one of the
  two declares the other in `independent_of` (audited when it lets a start through).
- Approvals: with `approval: second_person` an override, an advance against the recommendation and a
  roll back wait for another person's approve (or reject).
"""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import current_app, has_app_context
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pilot.analysis_config import SRM_ALPHA, AnalysisConfig, Gate
from pilot.audit import record
from pilot.db import utcnow
from pilot.errors import Conflict, Forbidden, Invalid, NotFound
from pilot.models import AnalysisPlan, AnalysisRun, Approval, Assignment, Customer, Enrolment, Pilot, Stage, Store
from pilot.models.pilots import LIVE_STATES
from pilot.verdicts import best_arm, harms, primary, significant

GATED = ("advance", "complete")
APPROVALS = ("none", "second_person")
PLAN_FIELDS = ("primary_metric", "guardrails", "alpha", "power", "mde")
# the CUPED covariate of every metric is its own pre-period value (pilot.aggregation); the plan states it
COVARIATES = {"cuped": "each metric's own value in the pre-period", "pre_days": 56}
DEFAULT_FRESHNESS_HOURS = 24.0


# -- gates -----------------------------------------------------------------------------------------

def freshness() -> timedelta:
    """How old the data of the analysis a gate is checked against may be."""
    hours = current_app.config.get("GATE_FRESHNESS_HOURS") if has_app_context() else None
    return timedelta(hours=float(hours or DEFAULT_FRESHNESS_HOURS))


def latest_run(session: Session, pilot: Pilot) -> AnalysisRun | None:
    """The latest finished analysis of the pilot's current stage (by cut-off)."""
    return session.scalars(select(AnalysisRun).where(
        AnalysisRun.pilot_id == pilot.id, AnalysisRun.stage == pilot.current_stage, AnalysisRun.status == "done")
        .order_by(AnalysisRun.cutoff.desc(), AnalysisRun.id.desc()).limit(1)).first()


def gate_check(session: Session, pilot: Pilot, action: str = "advance") -> dict[str, Any]:
    """The current stage's gate against the latest fresh analysis: every condition with its numbers."""
    stage = pilot.stage(pilot.current_stage)
    run = latest_run(session, pilot)
    out: dict[str, Any] = {"stage": pilot.current_stage, "analysis": run.id if run else None,
                           "decision": run.decision if run else None, "conditions": []}
    if stage is None:
        return out
    if run is None:
        out["conditions"] = [_cond("analysis", False, f"Stage {stage.position} has no finished analysis; run one "
                                   f"(POST /api/v1/pilots/{pilot.key}/analyses).")]
        return out
    out["conditions"] = _freshness_conditions(pilot, run) + _gate_conditions(pilot, stage, run, action)
    return out


def unmet(check: dict[str, Any]) -> list[dict[str, Any]]:
    """The conditions of a gate check that do not hold."""
    return [c for c in check["conditions"] if not c["met"]]


def _cond(name: str, met: bool, message: str, **numbers: Any) -> dict[str, Any]:
    return {"condition": name, "met": bool(met), **numbers, "message": message}


def _freshness_conditions(pilot: Pilot, run: AnalysisRun) -> list[dict[str, Any]]:
    age = utcnow() - run.cutoff
    limit = freshness()
    hours, max_hours = round(age.total_seconds() / 3600, 2), round(limit.total_seconds() / 3600, 2)
    out = [_cond("fresh_analysis", age <= limit, f"Analysis {run.id} reads data up to {run.cutoff.isoformat()}, "
                 f"{hours} hours ago (at most {max_hours} allowed); analyse again.",
                 cutoff=run.cutoff.isoformat(), age_hours=hours, max_age_hours=max_hours)]
    used = run.config.get("plan_version")
    if pilot.plan_version is not None and used != pilot.plan_version:
        out.append(_cond("plan_version", False, f"Analysis {run.id} used plan version {used}; the plan is at "
                         f"version {pilot.plan_version} now: analyse again.",
                         run_plan_version=used, plan_version=pilot.plan_version))
    return out


def _gate_conditions(pilot: Pilot, stage: Stage, run: AnalysisRun, action: str) -> list[dict[str, Any]]:
    """The gate's own conditions, computed as pilot.recommendation reads them."""
    gate = Gate.from_dict(stage.gate)
    config = AnalysisConfig.from_dict({**run.config, "gate": stage.gate})
    results = run.results or {}
    arms = results.get("arms") or []
    days, n_min = float(results.get("days") or 0.0), min((a["n"] for a in arms), default=0)
    arm = (run.recommendation or {}).get("arm") or (best_arm(config, results) if arms else None)
    out = [_cond("min_days", days >= gate.min_days, f"{days:.1f} of {gate.min_days} days run.",
                 actual=round(days, 2), required=gate.min_days),
           _cond("min_units_per_arm", n_min >= gate.min_units_per_arm,
                 f"{n_min} of {gate.min_units_per_arm} units in the smallest arm.", actual=n_min,
                 required=gate.min_units_per_arm)]
    row = primary(results, arm) if arm and arms else None
    if gate.require_significant:
        ok = row is not None and significant(row, config.alpha) and config.good(config.primary_metric,
                                                                                row["effect_abs"]) > 0
        p = None if row is None else (row.get("p_holm") if row.get("p_holm") is not None else row.get("p_value"))
        effect = None if row is None else row.get("effect_rel")
        out.append(_cond("require_significant", ok, f"The primary metric {config.primary_metric} of {arm}: effect "
                         f"{_pct(effect)}, p = {_num(p)} (needs p < {config.alpha} and the good direction).",
                         arm=arm, effect_rel=effect, p_value=p, alpha=config.alpha))
    roi = ((results.get("economics") or {}).get(arm) or {}).get("roi") if arm else None
    if results.get("unit") != "store" and roi is not None:
        out.append(_cond("min_roi", roi >= gate.min_roi, f"ROI of {arm} is {roi:.1%} (at least {gate.min_roi:.1%}).",
                         arm=arm, actual=roi, required=gate.min_roi))
    if gate.no_guardrail_harm and arms:
        going_on = _continuing_arms(pilot, stage, action)
        harmed = [r for a in going_on for r in harms(config, results, a)]
        out.append(_cond("no_guardrail_harm", not harmed, "No guardrail harmed." if not harmed else "Guardrail(s) "
                         "harmed: " + ", ".join(f"{r['arm']} {r['metric']} {_pct(r.get('effect_rel'))}" for r in harmed)
                         + ".", harmed=[{"arm": r["arm"], "metric": r["metric"], "effect_rel": r.get("effect_rel")}
                                        for r in harmed]))
    srm = results.get("srm") or {}
    if gate.no_srm and srm.get("p_value") is not None:
        out.append(_cond("no_srm", srm["p_value"] >= SRM_ALPHA, f"Sample-ratio test p = {_num(srm['p_value'])} "
                         f"(a mismatch below {SRM_ALPHA}).", p_value=srm["p_value"], observed=srm.get("observed"),
                         expected=srm.get("expected")))
    return out


def _continuing_arms(pilot: Pilot, stage: Stage, action: str) -> list[str]:
    """The treatment arms that go on: those with weight in the next stage (advance) or in this one."""
    nxt = pilot.stage(stage.position + 1) if action == "advance" else None
    allocation = (nxt or stage).allocation
    mechanics = {v.key: v.mechanic for v in pilot.programme.variants}
    return [k for k, w in allocation.items() if w > 0 and mechanics.get(k) != "control"]


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1%}"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def needs(session: Session, pilot: Pilot, action: str, reason: str | None, override: bool) -> dict[str, Any]:
    """What a lifecycle action needs before it may run: a 409 `gate_not_met` when the gate does not hold and
    there is no override, a 422 for an override without a reason; else the check and why a second person
    would have to approve it (`needs`: override, against_recommendation, rollback)."""
    out: dict[str, Any] = {"needs": [], "check": None}
    if action == "advance" and pilot.stage((pilot.current_stage or 0) + 1) is None:
        return out  # the transition's own 409 (last_stage) says why
    if action in GATED:
        check = gate_check(session, pilot, action)
        out["check"], missing = check, unmet(check)
        if missing and not override:
            listed = "; ".join(c["message"] for c in missing)
            raise Conflict(f"The gate of stage {pilot.current_stage} is not met: {listed} Override with "
                           '{"override": true, "reason": "..."} if you must.', code="gate_not_met",
                           details={"unmet": missing, "analysis": check["analysis"], "stage": check["stage"]})
        if missing:
            _require_reason(reason, "An override of the gate needs a written reason.")
            out["needs"].append("override")
        if action == "advance" and check["decision"] not in (None, "advance"):
            out["needs"].append("against_recommendation")
    if action == "rollback":
        out["needs"].append("rollback")
    return out


def _require_reason(reason: str | None, message: str) -> None:
    if not (reason or "").strip():
        raise Invalid(message, details={"fields": {"reason": [message]}})


def guard(session: Session, actor: str, pilot: Pilot, action: str, reason: str | None, override: bool,
          approval: Approval | None) -> None:
    """Check a lifecycle action (rollout.transition calls it first) and audit its override; with
    `approval: second_person` an action that needs it and has no approval is a 409 `approval_required`."""
    if action not in (*GATED, "rollback"):
        return
    found = needs(session, pilot, action, reason, override)
    if found["needs"] and pilot.approval == "second_person":
        if approval is None:
            raise Conflict(f"Pilot {pilot.key!r} needs a second person's approval to {action} "
                           f"({', '.join(found['needs'])}); request it through the API "
                           f"(POST /api/v1/pilots/{pilot.key}/{action}).", code="approval_required",
                           details={"needs": found["needs"]})
        if approval.status != "approved" or approval.action != action or approval.pilot_id != pilot.id:
            raise Conflict(f"Approval {approval.id} does not allow this action.", code="approval_required")
    if "override" in found["needs"]:
        check = found["check"]
        record(session, actor, "override_gate", "pilot", pilot.key, after={
            "action": action, "reason": reason, "stage": check["stage"], "analysis": check["analysis"],
            "decision": check["decision"], "unmet": unmet(check), "approval": approval.id if approval else None,
            "approved_by": approval.decided_by if approval else None})
    elif "against_recommendation" in found["needs"]:
        check = found["check"]
        record(session, actor, "against_recommendation", "pilot", pilot.key, after={
            "action": action, "reason": reason, "analysis": check["analysis"], "decision": check["decision"],
            "approval": approval.id if approval else None})


# -- approvals -------------------------------------------------------------------------------------

def request_action(session: Session, actor: str, pilot: Pilot, action: str, reason: str | None,
                   override: bool) -> Approval | None:
    """An approval request when the pilot asks a second person for this action (None: go ahead)."""
    if pilot.approval != "second_person" or action not in (*GATED, "rollback"):
        return None
    from pilot.rollout import TRANSITIONS
    if pilot.state not in TRANSITIONS[action]:
        return None  # the transition's own 409 says why
    if action == "rollback":
        _require_reason(reason, "A roll back needs a reason.")
    found = needs(session, pilot, action, reason, override)
    if not found["needs"]:
        return None
    check = found["check"] or {}
    approval = Approval(pilot_id=pilot.id, action=action, needs=found["needs"], status="pending",
                        requested_by=actor, request={"reason": reason, "override": bool(override),
                                                     "unmet": unmet(check) if check else [],
                                                     "analysis": check.get("analysis"),
                                                     "decision": check.get("decision")})
    session.add(approval)
    session.flush()
    record(session, actor, "request_approval", "pilot", pilot.key, after=approval_dict(approval))
    from pilot import webhooks
    webhooks.emit(session, "approval.requested", {"pilot": pilot.key, "approval": approval_dict(approval)},
                  f"{actor} asks to {action} pilot {pilot.key} ({', '.join(found['needs'])}): "
                  f"{reason or 'no reason given'}. Approve or reject approval {approval.id}.")
    return approval


def get_approval(session: Session, pilot: Pilot, approval_id: int) -> Approval:
    """The pilot's approval with the id, or a 404."""
    approval = session.get(Approval, approval_id)
    if approval is None or approval.pilot_id != pilot.id:
        raise NotFound(f"Pilot {pilot.key!r} has no approval {approval_id}.")
    return approval


def pending(session: Session, pilot: Pilot) -> list[Approval]:
    """The pilot's approvals still waiting."""
    return list(session.scalars(select(Approval).where(Approval.pilot_id == pilot.id, Approval.status == "pending")
                                .order_by(Approval.id)))


def decide(session: Session, actor: str, pilot: Pilot, approval: Approval, verdict: str,
           reason: str | None) -> Approval:
    """Approve (the action runs now, as requested) or reject a pending approval; never the requester's own."""
    if approval.status != "pending":
        raise Conflict(f"Approval {approval.id} is {approval.status} already.", code="approval_decided")
    if same_person(actor, approval.requested_by):
        raise Forbidden("A second person must decide: you requested this approval.", code="same_person")
    approval.status = "approved" if verdict == "approve" else "rejected"
    approval.decided_by, approval.decided_at, approval.decision_reason = actor, utcnow(), reason
    session.flush()
    record(session, actor, verdict, "approval", f"{pilot.key}/{approval.id}", after=approval_dict(approval))
    record(session, actor, f"{verdict}_{approval.action}", "pilot", pilot.key,
           after={"approval": approval.id, "requested_by": approval.requested_by, "reason": reason,
                  "request_reason": approval.request.get("reason")})
    if approval.status == "approved":
        from pilot.rollout import transition
        transition(session, approval.requested_by, pilot, approval.action, approval.request.get("reason"),
                   override=approval.request.get("override", False), approval=approval)
    return approval


def same_person(a: str, b: str) -> bool:
    """Whether two actor strings name one person (a user's tokens all name the user)."""
    return a.strip().lower() == b.strip().lower()


def approval_dict(a: Approval) -> dict[str, Any]:
    """An approval as plain data."""
    return {"id": a.id, "action": a.action, "needs": a.needs, "status": a.status, "reason": a.request.get("reason"),
            "override": a.request.get("override", False), "unmet": a.request.get("unmet", []),
            "requested_by": a.requested_by, "requested_at": a.requested_at, "decided_by": a.decided_by,
            "decided_at": a.decided_at, "decision_reason": a.decision_reason}


# -- settings --------------------------------------------------------------------------------------

def check_settings(session: Session, pilot: Pilot | None, data: dict[str, Any]) -> None:
    """`approval` and `independent_of` of a new or changed pilot: known pilots, no lowering while live."""
    if "approval" in data and data["approval"] not in APPROVALS:
        raise Invalid("approval is one of none, second_person.", details={"fields": {"approval": ["Unknown."]}})
    if pilot is not None and pilot.state in LIVE_STATES and pilot.approval == "second_person" \
            and data.get("approval", "second_person") != "second_person":
        raise Conflict("A live pilot's approval cannot be lowered from second_person.", code="approval_locked")
    keys = data.get("independent_of")
    if keys is None:
        return
    own = pilot.key if pilot is not None else data.get("key")
    known = set(session.scalars(select(Pilot.key).where(Pilot.key.in_(keys))))
    bad = sorted(set(keys) - known) + ([own] if own in keys else [])
    if bad:
        message = f"independent_of names unknown pilot(s) or the pilot itself: {', '.join(bad)}."
        raise Invalid(message, details={"fields": {"independent_of": [message]}})


# -- the analysis plan -----------------------------------------------------------------------------

def plan_of(pilot: Pilot) -> dict[str, Any]:
    """The analysis plan as it stands: what locks at the start."""
    return {"primary_metric": pilot.primary_metric, "guardrails": pilot.guardrails, "alpha": pilot.alpha,
            "power": pilot.power, "mde": pilot.mde, "covariates": COVARIATES,
            "gates": {str(s.position): s.gate for s in pilot.stages}}


def lock_plan(session: Session, actor: str, pilot: Pilot) -> AnalysisPlan:
    """Version 1 of the plan, locked as the pilot starts."""
    pilot.plan_version = 1
    plan = AnalysisPlan(pilot_id=pilot.id, version=1, plan=_json(plan_of(pilot)), actor=actor, reason=None)
    session.add(plan)
    return plan


def _json(value: Any) -> Any:
    from pilot.audit import _jsonable
    return _jsonable(value)


def refuse_plan_change(pilot: Pilot, data: dict[str, Any], gates: dict[str, Any] | None = None) -> None:
    """A 409 `analysis_plan_locked` for a change of the plan of a started pilot (not as an amendment)."""
    if pilot.state == "draft" or pilot.started_at is None:
        return
    changed = [f for f in PLAN_FIELDS if f in data and _json(data[f]) != _json(getattr(pilot, f))]
    changed += [f"stages.{p}.gate" for p, gate in (gates or {}).items()
                if _json(gate) != _json(pilot.stage(int(p)).gate)]
    if changed:
        raise Conflict(f"The analysis plan locked when the pilot started: {', '.join(changed)} cannot change. "
                       f"Amend the plan with a reason (POST /api/v1/pilots/{pilot.key}/analysis-plan/amendments).",
                       code="analysis_plan_locked", details={"fields": changed, "plan_version": pilot.plan_version})


def amend_plan(session: Session, actor: str, pilot: Pilot, changes: dict[str, Any], reason: str) -> AnalysisPlan:
    """Change the locked plan as an explicit amendment with a reason: the next plan version, audited."""
    if pilot.state not in LIVE_STATES:
        raise Conflict(f"Only a live pilot's plan is amended (this one is {pilot.state}; a draft is edited "
                       "directly).", code="invalid_transition")
    _require_reason(reason, "A plan amendment needs a reason.")
    gates = changes.pop("gates", None) or {}
    if not changes and not gates:
        raise Invalid("An amendment changes at least one of primary_metric, guardrails, alpha, power, mde, gates.",
                      details={"fields": {"_schema": ["Nothing to amend."]}})
    from pilot.rollout import _check_metrics, default_gate
    _check_metrics(changes, session)
    for position in gates:
        if pilot.stage(int(position)) is None:
            raise Invalid(f"Pilot {pilot.key!r} has no stage {position}.",
                          details={"fields": {f"gates.{position}": ["No such stage."]}})
    before, version = plan_of(pilot), (pilot.plan_version or 1) + 1
    for key, value in changes.items():
        setattr(pilot, key, value)
    for position, gate in gates.items():
        stage = pilot.stage(int(position))
        stage.gate = {**default_gate(pilot.unit), **stage.gate, **gate, "sample_unit": pilot.unit}
    pilot.plan_version = version
    plan = AnalysisPlan(pilot_id=pilot.id, version=version, plan=_json(plan_of(pilot)), reason=reason, actor=actor)
    session.add(plan)
    session.flush()
    record(session, actor, "amend_plan", "pilot", pilot.key, before={"plan_version": version - 1, **before},
           after={"plan_version": version, "reason": reason, **plan_of(pilot)})
    return plan


def plan_versions(session: Session, pilot: Pilot) -> list[AnalysisPlan]:
    """Every version of the pilot's analysis plan, oldest first."""
    return list(session.scalars(select(AnalysisPlan).where(AnalysisPlan.pilot_id == pilot.id)
                                .order_by(AnalysisPlan.version)))


# -- overlap ---------------------------------------------------------------------------------------

def _kind(pilot: Pilot) -> set[str]:
    return {v.mechanic for v in pilot.programme.variants if v.mechanic != "control"}


def overlaps(session: Session, pilot: Pilot, stores: list[Store]) -> list[dict[str, Any]]:
    """Live pilots of the same programme kind in other layers that hold any of the stores, or customers of
    them: [{"pilot", "layer", "stores", "customers", "sample_customers", "independent"}]."""
    ids = [s.id for s in stores]
    out = []
    others = session.scalars(select(Pilot).where(Pilot.state.in_(LIVE_STATES), Pilot.id != pilot.id,
                                                 Pilot.layer != pilot.layer).order_by(Pilot.key))
    for other in others:
        if not _kind(pilot) & _kind(other) or not ids:
            continue
        shared = sorted(session.scalars(select(Store.code).join(Enrolment, Enrolment.store_id == Store.id).where(
            Enrolment.pilot_id == other.id, Enrolment.withdrawn_at.is_(None), Store.id.in_(ids))))
        customers = select(Customer.external_id).join(Assignment, Assignment.customer_id == Customer.id).where(
            Assignment.pilot_id == other.id, Customer.home_store_id.in_(ids) | Assignment.store_id.in_(ids))
        count = session.scalar(select(func.count()).select_from(customers.subquery())) or 0
        if shared or count:
            sample = list(session.scalars(customers.order_by(Customer.external_id).limit(10)))
            independent = other.key in (pilot.independent_of or []) or pilot.key in (other.independent_of or [])
            out.append({"pilot": other.key, "layer": other.layer, "stores": shared, "customers": count,
                        "sample_customers": sample, "independent": independent})
    return out


def refuse_overlap(session: Session, actor: str, pilot: Pilot, stores: list[Store]) -> None:
    """A 409 `overlapping_pilot` naming the pilots and stores, unless declared independent (then audited)."""
    found = overlaps(session, pilot, stores)
    blocking = [o for o in found if not o["independent"]]
    if blocking:
        named = "; ".join(f"{o['pilot']} (layer {o['layer']}): stores {', '.join(o['stores']) or 'none'}, "
                          f"{o['customers']} customer(s)" for o in blocking)
        raise Conflict(f"Pilot {pilot.key!r} would overlap live pilot(s) of the same programme kind in other "
                       f"layers — {named}. A customer would get two programmes. Declare the pilots independent "
                       "(independent_of) if they truly are.", code="overlapping_pilot", details={"pilots": blocking})
    if found:
        record(session, actor, "overlap_declared_independent", "pilot", pilot.key, after={"overlaps": found})


def layers(session: Session) -> list[dict[str, Any]]:
    """Every layer with its live pilots."""
    out: dict[str, list[dict[str, Any]]] = {}
    for p in session.scalars(select(Pilot).order_by(Pilot.layer, Pilot.key)):
        entry = out.setdefault(p.layer, [])
        if p.state in LIVE_STATES:
            stores = session.scalar(select(func.count()).select_from(Enrolment).where(
                Enrolment.pilot_id == p.id, Enrolment.withdrawn_at.is_(None))) or 0
            entry.append({"pilot": p.key, "name": p.name, "state": p.state, "stage": p.current_stage,
                          "programme": p.programme.key, "stores": stores, "independent_of": p.independent_of})
    return [{"layer": k, "live_pilots": v} for k, v in out.items()]


# -- for reports -----------------------------------------------------------------------------------

DECISIONS = ("override_gate", "against_recommendation", "request_approval", "approve_advance", "approve_complete",
             "approve_rollback", "reject_advance", "reject_complete", "reject_rollback", "amend_plan",
             "overlap_declared_independent")


def record_of(session: Session, pilot: Pilot) -> dict[str, Any]:
    """What a report states about governance: the plan version, its amendments (with reasons) and every
    override, approval and independence declaration, each with the person."""
    from pilot.models import AuditEvent
    amendments = [{"version": v.version, "reason": v.reason, "actor": v.actor, "at": v.created_at}
                  for v in plan_versions(session, pilot) if v.version > 1]
    events = session.scalars(select(AuditEvent).where(AuditEvent.entity_type == "pilot",
                                                      AuditEvent.entity_id == pilot.key,
                                                      AuditEvent.action.in_(DECISIONS)).order_by(AuditEvent.id))
    return {"plan_version": pilot.plan_version, "amendments": amendments,
            "decisions": [{"at": e.at, "actor": e.actor, "action": e.action, "reason": (e.after or {}).get("reason"),
                           "detail": e.after} for e in events]}
