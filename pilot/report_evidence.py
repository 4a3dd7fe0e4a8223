"""What a report shows beside its run's own results: the stage's looks so far, how fresh the data
was, every stage of the pilot side by side with what changed between them, and the primary effect
pooled across the stages.

Pooling: each stage's latest analysis compares its own customers (a customer belongs to the stage it
was assigned in, so the stages' samples are disjoint and independent); the stages' effects are
combined stratified by stage, weighted by their customers (experiments.stratified.post_stratified),
never by pooling raw arms whose weights, scope and groups differ between stages. Cochran's Q says
whether the stages' effects differ. Store pilots are not pooled: a store can serve in several stages.
"""
from __future__ import annotations

import math
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from experiments.heterogeneity import cochran_q
from experiments.results import EffectResult, InferenceConfig
from experiments.stratified import post_stratified
from pilot.models import AnalysisRun, Assignment, Enrolment, Pilot, Stage, Transaction
from pilot.result_rows import clean

EFFECT_FIELDS = tuple(f.name for f in fields(EffectResult))
PRIMARY_KEYS = ("arm", "metric", *EFFECT_FIELDS, "seq_ci_rel_low", "seq_ci_rel_high")


def stage_runs(session: Session, run: AnalysisRun) -> list[AnalysisRun]:
    """The finished runs of the run's stage up to this one (the looks at the data so far)."""
    r = AnalysisRun
    earlier = or_(r.cutoff < run.cutoff, and_(r.cutoff == run.cutoff, r.id <= run.id))
    return list(session.scalars(select(r).where(r.pilot_id == run.pilot_id, r.stage == run.stage, r.status == "done",
                                                earlier).order_by(r.cutoff, r.id)))


def primary_rows(run: AnalysisRun) -> list[dict[str, Any]]:
    """The run's primary-metric row per arm (of a store pilot, the difference in differences: its ANCOVA
    rows are the second opinion)."""
    return [{k: r.get(k) for k in PRIMARY_KEYS} for r in run.results.get("metrics", [])
            if r.get("role") == "primary" and r.get("method") != "ancova"]


def _utc(value: datetime | str | None) -> datetime | None:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def freshness(session: Session, run: AnalysisRun) -> dict[str, Any]:
    """The stage's transactions of the pilot's customers (of a store pilot: its stores) up to the cut-off:
    how many, the last one, and how many arrived after the analysis read the data (late-arriving rows
    it could not count)."""
    started = _utc((run.results.get("stage") or {}).get("started_at")) or _utc(run.results.get("pre_start"))
    read_at = run.started_at or run.created_at
    t = Transaction
    where = [t.occurred_at <= run.cutoff] + ([t.occurred_at >= started] if started is not None else [])
    if run.results.get("unit") == "store":  # a store pilot's rows are its enrolled stores'
        where.append(t.store_id.in_(select(Enrolment.store_id).where(Enrolment.pilot_id == run.pilot_id)))
    else:
        where.append(t.customer_id.in_(select(Assignment.customer_id).where(Assignment.pilot_id == run.pilot_id)))
    rows, last, late = session.execute(
        select(func.count(), func.max(t.occurred_at), func.count().filter(t.received_at > read_at)).where(*where)).one()
    return {"data_up_to": _utc(run.cutoff), "since": started, "transactions": int(rows or 0),
            "last_transaction_at": _utc(last), "read_at": _utc(read_at), "late_rows": int(late or 0)}


def _scope(stage: Stage) -> dict[str, Any]:
    return {"regions": sorted(stage.region_codes or []), "stores": sorted(stage.store_codes or []),
            "allocation": dict(stage.allocation or {}),
            "groups": sorted(stage.eligible_groups) if stage.eligible_groups else None}


def _changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What differs between two stages' scope, weights and customer groups, in words."""
    out = []
    for key, name in (("regions", "regions"), ("stores", "stores")):
        added, dropped = sorted(set(after[key]) - set(before[key])), sorted(set(before[key]) - set(after[key]))
        if added:
            out.append(f"{name} added: {', '.join(added)}")
        if dropped:
            out.append(f"{name} dropped: {', '.join(dropped)}")
    was, now = before["allocation"], after["allocation"]
    if was != now:
        arms = list(dict.fromkeys([*was, *now]))
        out.append("weights: " + ", ".join(f"{k} {was.get(k, 0):.0%} → {now.get(k, 0):.0%}"
                                           for k in arms if was.get(k) != now.get(k)))
    if before["groups"] != after["groups"]:
        out.append(f"customer groups: {', '.join(before['groups'] or ['all'])} → "
                   f"{', '.join(after['groups'] or ['all'])}")
    return out


def stages(session: Session, pilot: Pilot) -> list[dict[str, Any]]:
    """Each stage of the pilot: its scope, weights and groups, what changed from the stage before, and
    its latest finished analysis (decision and primary effect per arm)."""
    latest = {}
    for r in session.scalars(select(AnalysisRun).where(AnalysisRun.pilot_id == pilot.id, AnalysisRun.status == "done")
                             .order_by(AnalysisRun.cutoff, AnalysisRun.id)):
        latest[r.stage] = r
    out, before = [], None
    for stage in sorted(pilot.stages, key=lambda s: s.position):
        scope = _scope(stage)
        run = latest.get(stage.position)
        out.append({"position": stage.position, "name": stage.name, **scope,
                    "changes": _changes(before, scope) if before else [],
                    "current": pilot.current_stage == stage.position,
                    "run": None if run is None else {"id": run.id, "cutoff": _utc(run.cutoff), "decision": run.decision,
                                                     "days": run.results.get("days"), "primary": primary_rows(run)}})
        before = scope
    return out


def _stored_effect(row: dict[str, Any]) -> EffectResult:
    """A stored effect row as the result it was (JSON's nulls back to NaN)."""
    keep = ("method", "n_control", "n_treatment", "df", "message")
    return EffectResult(**{k: row.get(k) if k in keep or row.get(k) is not None else math.nan for k in EFFECT_FIELDS})


def across_stages(stages: list[dict[str, Any]], unit: str, alpha: float) -> dict[str, Any]:
    """Each treatment arm's primary effect pooled over the stages whose latest analysis has it (two or
    more), stratified by stage and weighted by the stages' customers, with Cochran's Q across them."""
    if unit == "store":
        return {"arms": [], "reason": "store pilots are not pooled across stages: a store can serve in several "
                                      "stages, so the stages' samples are not independent"}
    out = []
    rows = [(s["position"], r) for s in stages if s["run"] for r in s["run"]["primary"]]
    for arm in dict.fromkeys(r["arm"] for _, r in rows):
        mine = [(p, r) for p, r in rows if r["arm"] == arm and r.get("se") and r.get("effect_abs") is not None]
        if len(mine) < 2 or len({r["metric"] for _, r in mine}) != 1:
            continue
        effect = post_stratified([_stored_effect(r) for _, r in mine], InferenceConfig(alpha))
        q = cochran_q([r["effect_abs"] for _, r in mine], [r["se"] for _, r in mine])
        out.append(clean({"arm": arm, "metric": mine[0][1]["metric"], "stages": [p for p, _ in mine],
                          **{k: getattr(effect, k) for k in EFFECT_FIELDS}, "q": q.q, "q_df": q.df,
                          "q_p_value": q.p_value, "i_squared": q.i_squared}))
    return {"arms": out, "reason": None if out else "fewer than two stages have an analysis of the primary metric"}
