"""Metric definitions managers make: versioned, checked by one parse (pilot.metric_spec), audited.

A key's current definition is its highest version; a pilot's analysis records the version it used. The
shipped definitions (SHIPPED) count as version 1 of their keys until one is stored (`ensure_shipped`
stores them; the first change of one stores it first), so every database has them.
Changing a definition that a live pilot measures falls under that pilot's locked analysis plan: refused
(409 `analysis_plan_locked`) unless made as an amendment with a reason, which gives each such pilot the
next plan version (so gates ask for a fresh analysis with the new definition).
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pilot.audit import record
from pilot.errors import Conflict, Invalid, NotFound
from pilot.metric_spec import TOP_FIELDS, DefinedMetric, Measure, parse
from pilot.metrics import CATALOGUE
from pilot.models import AnalysisPlan, MetricDefinitionVersion, Pilot
from pilot.models.pilots import LIVE_STATES

__all__ = ["DefinedMetric", "Measure", "SHIPPED", "all_current", "at_version", "current", "define",
           "ensure_shipped", "is_metric_key", "pilots_using", "redefine"]
SYSTEM_ACTOR = "pilot (shipped definitions)"


def _events(type_: str, aggregation: str, **more: Any) -> dict[str, Any]:
    return {"source": "events", "type": type_, "aggregation": aggregation, **more}


SHIPPED: list[dict[str, Any]] = [
    {"key": "nps", "name": "Net promoter score", "good_direction": "up", "kind": "mean", "covariate": True,
     "description": "Each customer's last survey answer scored +100 for a promoter (9-10), 0 for a passive "
                    "(7-8), -100 for a detractor (0-6); the arm's mean is its NPS",
     **_events("survey_nps", "nps")},
    {"key": "promoters_share", "name": "Promoters share", "good_direction": "up", "kind": "proportion",
     "description": "Share of customers who answered the NPS survey with 9 or 10 at least once",
     **_events("survey_nps", "any", value_at_least=9)},
    {"key": "app_sessions_per_customer", "name": "App sessions per customer", "good_direction": "up",
     "kind": "mean", "covariate": True, "description": "Sessions in the programme's mobile app per customer",
     **_events("app_session", "count")},
    {"key": "referrals_per_customer", "name": "Referrals per customer", "good_direction": "up", "kind": "mean",
     "description": "Friends referred per customer (word of mouth)", **_events("referral", "count")},
    {"key": "redeeming_share", "name": "Share of members redeeming points", "good_direction": "up",
     "kind": "proportion", "description": "Share of customers who redeemed points at least once",
     **_events("points_redeemed", "any")},
    {"key": "complaint_resolution_rate", "name": "Complaint resolution rate", "good_direction": "up",
     "kind": "ratio", "description": "Complaints resolved ÷ complaints opened (mistakes handled well)",
     "numerator": _events("complaint_resolved", "count"), "denominator": _events("complaint_opened", "count")},
    {"key": "refund_rate", "name": "Refund rate", "good_direction": "down", "kind": "ratio",
     "description": "Refunds ÷ purchases",
     "numerator": {"source": "transactions", "filters": {"type": "refund"}, "aggregation": "count"},
     "denominator": {"source": "transactions", "filters": {"type": "sale"}, "aggregation": "count"}},
]


SHIPPED_BY_KEY = {body["key"]: body for body in SHIPPED}


def _shipped(key: str) -> DefinedMetric | None:
    return parse(SHIPPED_BY_KEY[key]) if key in SHIPPED_BY_KEY else None


def _metric(row: MetricDefinitionVersion) -> DefinedMetric:
    body = {"key": row.key, "name": row.name, "description": row.description,
            "good_direction": row.good_direction, "kind": row.kind, **row.spec}
    return parse(body, key=row.key, version=row.version)


def _latest() -> Any:
    return (select(MetricDefinitionVersion.key, func.max(MetricDefinitionVersion.version).label("version"))
            .group_by(MetricDefinitionVersion.key).subquery())


def current(session: Session, key: str) -> DefinedMetric | None:
    """The key's current (highest) version, or None if no metric of that key was defined."""
    row = session.scalar(select(MetricDefinitionVersion).where(MetricDefinitionVersion.key == key)
                         .order_by(MetricDefinitionVersion.version.desc()).limit(1))
    return _shipped(key) if row is None else _metric(row)


def at_version(session: Session, key: str, version: int) -> DefinedMetric | None:
    """The key's definition as it was at `version`, or None."""
    row = session.scalar(select(MetricDefinitionVersion).filter_by(key=key, version=version))
    if row is None:
        return _shipped(key) if version == 1 and _stored_versions(session, key) == 0 else None
    return _metric(row)


def _stored_versions(session: Session, key: str) -> int:
    return session.scalar(select(func.count()).select_from(MetricDefinitionVersion).filter_by(key=key)) or 0


def all_current(session: Session) -> list[DefinedMetric]:
    """Every defined key's current definition, by key."""
    latest = _latest()
    rows = session.scalars(select(MetricDefinitionVersion).join(
        latest, (latest.c.key == MetricDefinitionVersion.key) & (latest.c.version == MetricDefinitionVersion.version))
        .order_by(MetricDefinitionVersion.key))
    stored = [_metric(r) for r in rows]
    keys = {m.key for m in stored}
    return sorted(stored + [parse(b) for k, b in SHIPPED_BY_KEY.items() if k not in keys], key=lambda m: m.key)


def versions(session: Session, key: str) -> list[dict[str, Any]]:
    """Every version of the key, oldest first: version, who made it and when."""
    rows = session.scalars(select(MetricDefinitionVersion).filter_by(key=key)
                           .order_by(MetricDefinitionVersion.version))
    out = [{"version": r.version, "actor": r.actor, "created_at": r.created_at.isoformat()} for r in rows]
    return out or ([{"version": 1, "actor": SYSTEM_ACTOR, "created_at": None}] if key in SHIPPED_BY_KEY else [])


def is_metric_key(session: Session, key: str) -> bool:
    """Whether a pilot can measure `key`: a built-in catalogue metric or a defined one."""
    return key in CATALOGUE or key in SHIPPED_BY_KEY or session.scalar(
        select(MetricDefinitionVersion.id).filter_by(key=key).limit(1)) is not None


def _store(session: Session, actor: str, metric: DefinedMetric) -> MetricDefinitionVersion:
    row = MetricDefinitionVersion(key=metric.key, version=metric.version, name=metric.name,
                                  description=metric.description, good_direction=metric.good_direction,
                                  kind=metric.kind, spec=metric.spec(), actor=actor)
    session.add(row)
    session.flush()
    return row


def define(session: Session, actor: str, body: dict[str, Any]) -> DefinedMetric:
    """A new metric (version 1), audited; a 409 `metric_exists` if the key is taken (catalogue too)."""
    metric = parse(body)
    if metric.key in CATALOGUE or current(session, metric.key) is not None:
        raise Conflict(f"A metric {metric.key!r} exists already; change it with PATCH /api/v1/metrics/{metric.key}.",
                       code="metric_exists", details={"fields": {"key": ["Taken."]}})
    _store(session, actor, metric)
    record(session, actor, "create", "metric", metric.key, after={"version": 1, **metric.body()})
    return metric


def pilots_using(session: Session, key: str, live_only: bool = True) -> list[Pilot]:
    """The pilots (live ones by default) whose primary metric or a guardrail is `key`."""
    query = select(Pilot).order_by(Pilot.key)
    if live_only:
        query = query.where(Pilot.state.in_(LIVE_STATES))
    return [p for p in session.scalars(query)
            if p.primary_metric == key or any(g.get("metric") == key for g in p.guardrails or [])]


def redefine(session: Session, actor: str, key: str, changes: dict[str, Any],
             reason: str | None = None) -> DefinedMetric:
    """The next version of `key` with `changes` merged in (null removes a field); with a live pilot
    measuring it, only as a plan amendment with a `reason` (else 409 `analysis_plan_locked`)."""
    if key in CATALOGUE:
        raise Conflict(f"{key!r} is a built-in metric and cannot be redefined.", code="built_in_metric")
    old = current(session, key)
    if old is None:
        raise NotFound(f"No defined metric {key!r}.")
    if changes.get("key", key) != key:
        raise Invalid("A metric's key cannot change.", details={"fields": {"key": ["Cannot change."]}})
    base = old.body()
    if "kind" in changes and (changes["kind"] == "ratio") != (old.kind == "ratio"):
        base = {k: v for k, v in base.items() if k in TOP_FIELDS and k not in ("numerator", "denominator")}
    merged = {k: v for k, v in {**base, **changes}.items() if v is not None}
    new = parse(merged, key=key, version=old.version + 1)
    if new.body() == old.body():
        raise Invalid("Nothing changes in this definition.", details={"fields": {"_schema": ["Nothing to change."]}})
    live = pilots_using(session, key)
    if live and not (reason and reason.strip()):
        raise Conflict(f"Live pilots measure {key!r} ({', '.join(p.key for p in live)}); their analysis plans "
                       "locked when they started. Change it as a plan amendment: give a reason.",
                       code="analysis_plan_locked", details={"pilots": [p.key for p in live], "metric": key})
    if _stored_versions(session, key) == 0:  # a shipped definition changes for the first time
        _store(session, SYSTEM_ACTOR, old)
    _store(session, actor, new)
    record(session, actor, "update", "metric", key, before={"version": old.version, **old.body()},
           after={"version": new.version, "reason": reason, **new.body()})
    for pilot in live:
        _amend(session, actor, pilot, key, new.version, reason or "")
    return new


def _amend(session: Session, actor: str, pilot: Pilot, key: str, version: int, reason: str) -> None:
    from pilot.governance import _json, plan_of
    before = pilot.plan_version or 1
    pilot.plan_version = before + 1
    plan = {**plan_of(pilot), "metric_definitions": {key: version}}
    session.add(AnalysisPlan(pilot_id=pilot.id, version=pilot.plan_version, plan=_json(plan), reason=reason,
                             actor=actor))
    session.flush()
    record(session, actor, "amend_plan", "pilot", pilot.key, before={"plan_version": before},
           after={"plan_version": pilot.plan_version, "reason": reason, "metric_definitions": {key: version}})


def ensure_shipped(session: Session) -> None:
    """Insert the shipped definitions whose keys are not defined yet (idempotent)."""
    taken = set(session.scalars(select(MetricDefinitionVersion.key).distinct()))
    for body in SHIPPED:
        if body["key"] not in taken:
            metric = parse(body)
            _store(session, SYSTEM_ACTOR, metric)
            record(session, SYSTEM_ACTOR, "create", "metric", metric.key, after={"version": 1, **metric.body()})
