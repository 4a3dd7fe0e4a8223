"""Assigning customers to a pilot's variants: one at a time or all at once, sticky and race-safe.

Stickiness and races are settled by unique constraints (one assignment per pilot and customer,
one live pilot per layer and customer) with INSERT … ON CONFLICT DO NOTHING, then reading back
what is stored: two processes assigning the same customer get one row and the same answer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Float, and_, case, cast, exists, func, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from pilot.assignment import bucket, edges, variant_for
from pilot.db import utcnow
from pilot.models import Assignment, Customer, Enrolment, LayerMembership, Pilot, Store
from pilot.segments import group_case, saved_groups


@dataclass(frozen=True)
class Holdout:
    """The global holdout: a share of customers, by its own salt, that never gets a programme."""

    share: float = 0.0
    salt: str = "holdout"

    def holds(self, external_id: str) -> bool:
        return self.share > 0 and bucket(self.salt, external_id) < self.share


@dataclass(frozen=True)
class Decision:
    """The answer for one customer: a variant, or the reason there is none."""

    variant: str | None
    reason: str | None
    assigned_at: Any = None
    new: bool = False


def _insert(session: Session, model: type):  # noqa: ANN202
    return (postgresql if session.bind.dialect.name == "postgresql" else sqlite).insert(model)


def bucket_sql(session: Session, salt: str, unit: ColumnElement) -> ColumnElement:
    """The bucket of assignment.bucket, computed by the database."""
    text = literal(f"{salt}:") + unit
    if session.bind.dialect.name == "postgresql":
        hexdigits = func.substr(func.encode(func.sha256(func.convert_to(text, "UTF8")), "hex"), 1, 13)
        as_int = cast(cast(literal("x") + hexdigits, postgresql.BIT(52)), BigInteger)
        return cast(as_int, Float) / float(16**13)
    return func.pilot_bucket(salt, unit)


def variant_sql(session: Session, salt: str, unit: ColumnElement, weights: dict[str, float]) -> ColumnElement:
    """CASE mapping the unit's bucket to a variant key (NULL when no weight covers it)."""
    b = bucket_sql(session, salt, unit)
    return case(*[(b < edge, key) for key, edge in edges(weights)], else_=None)


def _stored(session: Session, pilot: Pilot, customer_id: int) -> Assignment | None:
    return session.scalar(select(Assignment).where(Assignment.pilot_id == pilot.id,
                                                   Assignment.customer_id == customer_id))


def assign_one(session: Session, pilot: Pilot, customer: Customer | None, store: Store | None,
               holdout: Holdout) -> Decision:
    """Decide (once, then forever) the variant of one customer buying in one store."""
    if pilot.state != "running":
        return Decision(None, "pilot_not_running")
    if customer is None:
        return Decision(None, "unknown_customer")
    stored = _stored(session, pilot, customer.id)
    if stored is not None:
        return Decision(stored.variant, None, stored.assigned_at)
    reason, variant = _eligibility(session, pilot, customer, store, holdout)
    if reason:
        return Decision(None, reason)
    if variant is None:
        return Decision(None, "no_allocation")
    session.execute(_insert(session, LayerMembership).values(layer=pilot.layer, customer_id=customer.id,
                                                             pilot_id=pilot.id).on_conflict_do_nothing())
    holder = session.scalar(select(LayerMembership.pilot_id).where(LayerMembership.layer == pilot.layer,
                                                                    LayerMembership.customer_id == customer.id))
    if holder != pilot.id:
        return Decision(None, "in_other_pilot_of_layer")
    session.execute(_insert(session, Assignment).values(
        pilot_id=pilot.id, customer_id=customer.id, variant=variant, stage=pilot.current_stage,
        store_id=store.id, assigned_at=utcnow()).on_conflict_do_nothing())
    stored = _stored(session, pilot, customer.id)
    return Decision(stored.variant, None, stored.assigned_at, new=stored.variant == variant)


def _eligibility(session: Session, pilot: Pilot, customer: Customer, store: Store | None,
                 holdout: Holdout) -> tuple[str | None, str | None]:
    if store is None:
        return "no_store", None
    enrolment = session.scalar(select(Enrolment).where(Enrolment.pilot_id == pilot.id,
                                                       Enrolment.store_id == store.id,
                                                       Enrolment.withdrawn_at.is_(None)))
    if enrolment is None:
        return "store_not_enrolled", None
    if holdout.holds(customer.external_id):
        return "in_holdout", None
    stage = pilot.stage(pilot.current_stage)
    if stage.eligible_groups is not None:
        group = session.scalar(select(group_case(saved_groups(session))).where(Customer.id == customer.id))
        if group not in stage.eligible_groups:
            return "group_not_eligible", None
    if pilot.unit == "store":
        return None, enrolment.arm
    return None, variant_for(pilot.salt, customer.external_id, stage.allocation)


def _conditions(session: Session, pilot: Pilot, holdout: Holdout) -> dict[str, ColumnElement]:
    """The reasons a customer of an enrolled home store is left out, as SQL conditions."""
    stage = pilot.stage(pilot.current_stage)
    held = bucket_sql(session, holdout.salt, Customer.external_id) < holdout.share if holdout.share > 0 \
        else literal(False)
    eligible = group_case(saved_groups(session)).in_(stage.eligible_groups) \
        if stage.eligible_groups is not None else literal(True)
    other = exists().where(LayerMembership.layer == pilot.layer, LayerMembership.customer_id == Customer.id,
                           LayerMembership.pilot_id != pilot.id)
    assigned = exists().where(Assignment.pilot_id == pilot.id, Assignment.customer_id == Customer.id)
    return {"held": held, "eligible": eligible, "other": other, "assigned": assigned}


def _enrolled_join():  # noqa: ANN202
    return and_(Enrolment.store_id == Customer.home_store_id, Enrolment.withdrawn_at.is_(None))


def assign_bulk(session: Session, pilot: Pilot, holdout: Holdout) -> dict[str, Any]:
    """Assign every eligible customer of the enrolled stores in set-based SQL; counts per variant and reason."""
    if pilot.state != "running":
        return {"assigned_now": 0, "variants": {}, "reasons": {"pilot_not_running": None}}
    stage = pilot.stage(pilot.current_stage)
    c = _conditions(session, pilot, holdout)
    base = (select(Customer.id).join(Enrolment, _enrolled_join()).where(Enrolment.pilot_id == pilot.id)
            .where(~c["assigned"], ~c["held"], c["eligible"], ~c["other"]))
    claim = _insert(session, LayerMembership).from_select(
        ["layer", "customer_id", "pilot_id"],
        base.with_only_columns(literal(pilot.layer), Customer.id, literal(pilot.id))).on_conflict_do_nothing()
    session.execute(claim)
    variant = Enrolment.arm if pilot.unit == "store" else variant_sql(session, pilot.salt, Customer.external_id,
                                                                        stage.allocation)
    mine = exists().where(LayerMembership.layer == pilot.layer, LayerMembership.customer_id == Customer.id,
                          LayerMembership.pilot_id == pilot.id)
    rows = (select(literal(pilot.id), Customer.id, variant, literal(pilot.current_stage), Customer.home_store_id,
                   literal(utcnow(), type_=Assignment.__table__.c.assigned_at.type))
            .join(Enrolment, _enrolled_join()).where(Enrolment.pilot_id == pilot.id)
            .where(~c["assigned"], ~c["held"], c["eligible"], mine, variant.is_not(None)))
    count = select(func.count()).select_from(Assignment).where(Assignment.pilot_id == pilot.id)
    before = session.scalar(count)
    session.execute(_insert(session, Assignment).from_select(
        ["pilot_id", "customer_id", "variant", "stage", "store_id", "assigned_at"], rows).on_conflict_do_nothing())
    return {"assigned_now": session.scalar(count) - before, **assignment_counts(session, pilot, holdout)}


def assignment_counts(session: Session, pilot: Pilot, holdout: Holdout) -> dict[str, Any]:
    """Customers per variant, and per reason for those without one (one GROUP BY in the database)."""
    c = _conditions(session, pilot, holdout)
    stored = select(Assignment.variant).where(Assignment.pilot_id == pilot.id,
                                              Assignment.customer_id == Customer.id).scalar_subquery()
    enrolled = exists().where(_enrolled_join(), Enrolment.pilot_id == pilot.id)
    status = case((stored.is_not(None), literal("variant:") + stored),
                  (~enrolled, "store_not_enrolled"), (c["held"], "in_holdout"),
                  (~c["eligible"], "group_not_eligible"), (c["other"], "in_other_pilot_of_layer"),
                  else_="not_yet_assigned").label("status")
    rows = session.execute(select(status, func.count()).select_from(Customer).group_by(status)).all()
    variants = {k.removeprefix("variant:"): n for k, n in rows if k.startswith("variant:")}
    reasons = {k: n for k, n in rows if not k.startswith("variant:")}
    return {"variants": variants, "reasons": reasons}


def release_layer(session: Session, pilot: Pilot) -> None:
    """Free the pilot's customers for other pilots of its layer (it has ended)."""
    session.execute(LayerMembership.__table__.delete().where(LayerMembership.pilot_id == pilot.id))


def stage_counts(session: Session, pilot: Pilot) -> dict[int, dict[str, int]]:
    """Assignments per stage and variant."""
    rows = session.execute(select(Assignment.stage, Assignment.variant, func.count())
                           .where(Assignment.pilot_id == pilot.id).group_by(Assignment.stage, Assignment.variant))
    out: dict[int, dict[str, int]] = {}
    for stage, variant, n in rows:
        out.setdefault(stage, {})[variant] = n
    return out
