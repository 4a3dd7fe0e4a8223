"""Assigning customers to a pilot's variants: one at a time or all at once, sticky and race-safe.

Stickiness and races are settled by unique constraints (one assignment per pilot and customer,
one live pilot per layer and customer) with INSERT … ON CONFLICT DO NOTHING, then reading back
what is stored: two processes assigning the same customer get one row and the same answer.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from flask import current_app
from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    Executable,
    Float,
    Insert,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    Text,
    and_,
    bindparam,
    case,
    cast,
    exists,
    func,
    insert,
    literal,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from experiments.srm import srm_test
from pilot.auth import Principal, store_scope_error
from pilot.bucketing import bucket, edges, variant_for
from pilot.customer_groups import group_case, saved_groups
from pilot.customers import ROW_COLUMNS, customer_row
from pilot.db import utcnow
from pilot.driver import fast_rows
from pilot.errors import Invalid, NotFound
from pilot.mechanics import describe
from pilot.models import ApiToken, Assignment, Customer, Enrolment, LayerMembership, Pilot, Stage, Store, Variant
from pilot.query_plans import set_based_plan


@dataclass(frozen=True)
class Holdout:
    """The global holdout: a share of customers, by its own salt, that never gets a programme."""

    share: float = 0.0
    salt: str = "holdout"

    def holds(self, external_id: str) -> bool:
        return self.share > 0 and bucket(self.salt, external_id) < self.share


def holdout(config: dict | None = None) -> Holdout:
    """The global holdout configured for this installation (the app's config, else the current app's)."""
    config = current_app.config if config is None else config
    return Holdout(config["HOLDOUT_SHARE"], config["HOLDOUT_SALT"])


class TokenNotLive(LookupError):
    """The caller's token was revoked (or removed) during the request."""


class NeedsFullRequest(Exception):
    """A step the lean till path (pilot.api.fast_assignment) does not take: one that needs the ORM session."""


@dataclass(frozen=True)
class AssignmentDb:
    """Where the till's statements run: through a request's session, or straight on a pooled driver
    connection (the lean till path, pilot.api.fast_assignment, with `session` None: a step that needs the session
    raises NeedsFullRequest there, and the full request cycle answers the request from the start)."""

    postgres: bool
    rows: Callable[[Executable, dict[str, Any]], list[tuple]]
    session: Session | None = None

    @classmethod
    def of(cls, session: Session) -> AssignmentDb:
        """The statements of a request's session (on the driver for PostgreSQL: pilot.driver.fast_rows)."""
        return cls(session.bind.dialect.name == "postgresql",
                   lambda stmt, params: fast_rows(session.connection(), stmt, params), session)

    def full_request_session(self) -> Session:
        """The session, for the steps the lean path leaves to the full request cycle."""
        if self.session is None:
            raise NeedsFullRequest
        return self.session


@dataclass(frozen=True)
class Decision:
    """The answer for one customer: a variant, or the reason there is none."""

    variant: str | None
    reason: str | None
    assigned_at: Any = None
    new: bool = False


def _insert(session: Session, model: type):
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


@dataclass
class AssignmentContext:
    """What one assignment request needs to know, read in one query: the caller's token (read again,
    so a token revoked a moment ago is refused), the pilot and its current stage, the customer and any
    stored assignment, the store of the purchase and its enrolment, the variants, and the home store a
    customer to be created names. `pilot_id` is None when there is no such pilot."""

    params: dict[str, Any]
    token_store: str | None
    pilot_id: int | None
    state: str | None
    layer: str | None
    salt: str | None
    unit: str | None
    stage: int | None
    allocation: dict[str, float]
    eligible_groups: list[str] | None
    customer_id: int | None
    store_code: str | None
    store_id: int | None
    enrolled: bool
    arm: str | None
    stored_variant: str | None
    stored_at: Any
    new_home_id: int | None
    variants: dict[str, tuple[str, str, str | None]]  # key -> (name, mechanic, parameters as JSON text)

    def variant(self, key: str | None) -> dict[str, Any] | None:
        """One variant with its parameters (only the variant answered is decoded)."""
        if key not in self.variants:
            return None
        name, mechanic, parameters = self.variants[key]
        return {"key": key, "name": name, "mechanic": mechanic, "parameters": _json(parameters) or {}}


def _json(value: str | None) -> Any:
    return None if value is None else json.loads(value)


@cache
def _context_query() -> Select:
    p, st, c, hs, ps, nh, ts = (t.alias(n) for t, n in (
        (Pilot.__table__, "p"), (Stage.__table__, "st"), (Customer.__table__, "c"), (Store.__table__, "hs"),
        (Store.__table__, "ps"), (Store.__table__, "nh"), (Store.__table__, "ts")))
    tok, e = ApiToken.__table__.alias("tok"), Enrolment.__table__.alias("e")
    a, v = Assignment.__table__.alias("a"), Variant.__table__.alias("v")
    new_home = bindparam("new_home", type_=String)
    store_code = func.coalesce(bindparam("store", type_=String), hs.c.code, case((c.c.id.is_(None), new_home)),
                               ts.c.code)
    # JSON columns come back as text: the stage's on every variant's row would otherwise be decoded
    # once per row, and only the answered variant's parameters are needed (AssignmentContext.variant)
    return (select(ts.c.code, p.c.id, p.c.state, p.c.layer, p.c.salt, p.c.unit, p.c.current_stage,
                   cast(st.c.allocation, Text), cast(st.c.eligible_groups, Text), c.c.id, store_code, ps.c.id,
                   e.c.id, e.c.arm, a.c.variant, a.c.assigned_at, nh.c.id, v.c.key, v.c.name, v.c.mechanic,
                   cast(v.c.parameters, Text))
            .select_from(tok)
            .outerjoin(ts, ts.c.id == tok.c.store_id)  # a store token's store: the default store of the purchase
            .outerjoin(p, p.c.key == bindparam("pilot", type_=String))
            .outerjoin(st, and_(st.c.pilot_id == p.c.id, st.c.position == p.c.current_stage))
            .outerjoin(c, c.c.external_id == bindparam("customer", type_=String))
            .outerjoin(hs, hs.c.id == c.c.home_store_id)
            .outerjoin(ps, ps.c.code == store_code)
            .outerjoin(nh, nh.c.code == new_home)
            .outerjoin(e, and_(e.c.pilot_id == p.c.id, e.c.store_id == ps.c.id, e.c.withdrawn_at.is_(None)))
            .outerjoin(a, and_(a.c.pilot_id == p.c.id, a.c.customer_id == c.c.id))
            .outerjoin(v, v.c.programme_id == p.c.programme_id)
            .where(tok.c.token_hash == bindparam("token_hash", type_=String), tok.c.revoked_at.is_(None)))


def read_context(tdb: AssignmentDb, token_hash: str, pilot_key: str, customer: str, store: str | None,
         new_home: str | None = None) -> AssignmentContext | None:
    """The context of one assignment; None when the token (by its hash) is unknown or revoked. The
    store is the purchase's, else the customer's home store (`new_home` for a customer still to be
    created), else a store token's."""
    params = {"token_hash": token_hash, "pilot": pilot_key, "customer": customer, "store": store,
              "new_home": new_home}
    rows = tdb.rows(_context_query(), params)
    if not rows:
        return None
    r = rows[0]
    return AssignmentContext(params, *r[:7], _json(r[7]) or {}, _json(r[8]), *r[9:12], r[12] is not None, *r[13:17],
                {x[17]: (x[18], x[19], x[20]) for x in rows if x[17] is not None})


def assign_one(tdb: AssignmentDb, t: AssignmentContext, holdout: Holdout,
               create: dict[str, Any] | None = None) -> Decision:
    """Decide (once, then forever) the variant of one customer buying in one store.

    `create` holds the columns of an unknown customer to create first. Every write is one statement
    that settles races by unique constraints, so the caller may run it without a transaction: on
    PostgreSQL the usual new assignment (customer, layer claim, assignment) is a single statement.
    A layer claim lost to a race, and the group eligibility check, need the session
    (AssignmentDb.full_request_session)."""
    if t.customer_id is None and create is not None:
        if tdb.postgres and t.state == "running" and t.eligible_groups is None:
            reason, variant = _eligibility(tdb, t, holdout)
            if reason is None and variant is not None:
                won = tdb.rows(_create_claim_and_insert(), _row(t, variant, create))
                if won:
                    return Decision(won[0][0], None, won[0][1], new=True)
        tdb.rows(_create_customer(tdb.postgres), {f"new_{k}": v for k, v in create.items()})
        p = t.params  # read again: the customer now exists (created here or by a concurrent request)
        t = read_context(tdb, p["token_hash"], p["pilot"], p["customer"], p["store"], p["new_home"])
        if t is None:
            raise TokenNotLive("the token was revoked while the customer was created")
    if t.state != "running":
        return Decision(None, "pilot_not_running")
    if t.customer_id is None:
        return Decision(None, "unknown_customer")
    if t.stored_variant is not None:
        return Decision(t.stored_variant, None, t.stored_at)
    reason, variant = _eligibility(tdb, t, holdout)
    if reason:
        return Decision(None, reason)
    if variant is None:
        return Decision(None, "no_allocation")
    row = _row(t, variant)
    if tdb.postgres:
        won = tdb.rows(_claim_and_insert(), row)
        if won:  # the usual case: one statement claims the layer and stores the assignment
            return Decision(won[0][0], None, won[0][1], new=True)
    session = tdb.full_request_session()
    session.execute(_insert(session, LayerMembership).values(layer=t.layer, customer_id=t.customer_id,
                                                             pilot_id=t.pilot_id).on_conflict_do_nothing())
    holder = session.scalar(select(LayerMembership.pilot_id).where(LayerMembership.layer == t.layer,
                                                                    LayerMembership.customer_id == t.customer_id))
    if holder != t.pilot_id:
        return Decision(None, "in_other_pilot_of_layer")
    session.execute(_insert(session, Assignment).values({k: row[k] for k in ASSIGNMENT_COLUMNS})
                    .on_conflict_do_nothing())
    stored = session.execute(select(Assignment.variant, Assignment.assigned_at).where(
        Assignment.pilot_id == t.pilot_id, Assignment.customer_id == t.customer_id)).one()
    return Decision(stored.variant, None, stored.assigned_at, new=stored.variant == variant)


ASSIGNMENT_COLUMNS = ("pilot_id", "customer_id", "variant", "stage", "store_id", "assigned_at")


def _row(t: AssignmentContext, variant: str, create: dict[str, Any] | None = None) -> dict[str, Any]:
    row = {"pilot_id": t.pilot_id, "customer_id": t.customer_id, "variant": variant, "stage": t.stage,
           "store_id": t.store_id, "assigned_at": utcnow(), "layer": t.layer}
    return row if create is None else {**row, **{f"new_{k}": v for k, v in create.items()}}


def _assignment_from(claim) -> Insert:
    """INSERT INTO assignments … SELECT … FROM the claim CTE, returning what was stored."""
    table = Assignment.__table__
    values = select(*[claim.c.customer_id if c == "customer_id" else bindparam(c, type_=table.c[c].type)
                      for c in ASSIGNMENT_COLUMNS]).select_from(claim)
    return (postgresql.insert(Assignment).from_select(list(ASSIGNMENT_COLUMNS), values).on_conflict_do_nothing()
            .returning(Assignment.variant, Assignment.assigned_at))


@cache
def _claim_and_insert() -> Insert:
    """PostgreSQL: claim the layer and insert the assignment in one statement; no row back when the
    claim already existed (the caller then goes the long way and reads what is stored)."""
    claim = (postgresql.insert(LayerMembership)
             .values(layer=bindparam("layer"), customer_id=bindparam("customer_id"), pilot_id=bindparam("pilot_id"))
             .on_conflict_do_nothing().returning(LayerMembership.customer_id).cte("claim"))
    return _assignment_from(claim)


def _customer_insert(postgres: bool) -> Insert:
    """Create the customer (bind new_<column>), unless a concurrent request just did."""
    table = Customer.__table__
    return ((postgresql if postgres else sqlite).insert(Customer)
            .values({c: bindparam(f"new_{c}", type_=table.c[c].type) for c in ROW_COLUMNS})
            .on_conflict_do_nothing(index_elements=["external_id"]))


@cache
def _create_customer(postgres: bool) -> Insert:
    """The process's statement of _customer_insert."""
    return _customer_insert(postgres)


@cache
def _create_claim_and_insert() -> Insert:
    """PostgreSQL: create the customer, claim the layer and insert the assignment in one statement; no
    row back when the customer already existed (created meanwhile by another request)."""
    # A fresh insert, not _create_customer's: once run on the driver that one has memoised its (no)
    # columns (pilot.driver reads exported_columns), and .returning() copies the memo (SQLAlchemy
    # 2.1), so a CTE built from it after that first run had no `id` column.
    made = _customer_insert(True).returning(Customer.id).cte("made")
    claim = (postgresql.insert(LayerMembership)
             .from_select(["layer", "customer_id", "pilot_id"],
                          select(bindparam("layer", type_=String), made.c.id, bindparam("pilot_id")))
             .on_conflict_do_nothing().returning(LayerMembership.customer_id).cte("claim"))
    return _assignment_from(claim)



def _eligibility(tdb: AssignmentDb, t: AssignmentContext, holdout: Holdout) -> tuple[str | None, str | None]:
    if t.store_id is None:
        return "no_store", None
    if not t.enrolled:
        return "store_not_enrolled", None
    if holdout.holds(t.params["customer"]):
        return "in_holdout", None
    if t.eligible_groups is not None:
        session = tdb.full_request_session()
        group = session.scalar(select(group_case(saved_groups(session))).where(Customer.id == t.customer_id))
        if group not in t.eligible_groups:
            return "group_not_eligible", None
    if t.unit == "store":
        return None, t.arm
    return None, variant_for(t.salt, t.params["customer"], t.allocation)


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


def _enrolled_join():
    return and_(Enrolment.store_id == Customer.home_store_id, Enrolment.withdrawn_at.is_(None))


def assign_bulk(session: Session, pilot: Pilot, holdout: Holdout) -> dict[str, Any]:
    """Assign every eligible customer of the enrolled stores in set-based SQL; counts per variant and reason.

    The candidates (eligible, unassigned, unclaimed customers of enrolled home stores, with their
    variant) are selected once into a temporary table; the layer claims and the assignments are
    then two INSERT … SELECT … ON CONFLICT DO NOTHING from it, so a till assigning at the same time
    settles every race through the same unique constraints."""
    if pilot.state != "running":
        return {"assigned_now": 0, "variants": {}, "reasons": {"pilot_not_running": None}}
    stage = pilot.stage(pilot.current_stage)
    c = _conditions(session, pilot, holdout)
    variant = Enrolment.arm if pilot.unit == "store" else variant_sql(session, pilot.salt, Customer.external_id,
                                                                        stage.allocation)
    candidates = (select(Customer.id, Customer.home_store_id, variant)
                  .join(Enrolment, _enrolled_join()).where(Enrolment.pilot_id == pilot.id)
                  .where(~c["assigned"], ~c["held"], c["eligible"], ~c["other"]))
    conn = session.connection()
    with set_based_plan(conn):  # right after a large import stale statistics favour a million index probes
        bulk = Table("pilot_bulk", MetaData(), Column("customer_id", Integer), Column("store_id", Integer),
                     Column("variant", String(64)), prefixes=["TEMPORARY"])
        bulk.drop(conn, checkfirst=True)
        bulk.create(conn)
        conn.execute(insert(bulk).from_select(["customer_id", "store_id", "variant"], candidates))
        conn.execute(_insert(session, LayerMembership).from_select(  # (SQLite: an upsert's SELECT needs a WHERE)
            ["layer", "customer_id", "pilot_id"],
            select(literal(pilot.layer), bulk.c.customer_id, literal(pilot.id))
            .where(bulk.c.customer_id.is_not(None))).on_conflict_do_nothing())
        rows = (select(literal(pilot.id), bulk.c.customer_id, bulk.c.variant, literal(pilot.current_stage),
                       bulk.c.store_id, literal(utcnow(), type_=Assignment.__table__.c.assigned_at.type))
                .join(LayerMembership, and_(LayerMembership.layer == pilot.layer,
                                            LayerMembership.customer_id == bulk.c.customer_id,
                                            LayerMembership.pilot_id == pilot.id))
                .where(bulk.c.variant.is_not(None)))
        count = select(func.count()).select_from(Assignment).where(Assignment.pilot_id == pilot.id)
        before = conn.scalar(count)
        conn.execute(_insert(session, Assignment).from_select(list(ASSIGNMENT_COLUMNS), rows).on_conflict_do_nothing())
        added = conn.scalar(count) - before
        bulk.drop(conn)
        counts = assignment_counts(session, pilot, holdout)
    return {"assigned_now": added, **counts}


def assignment_counts(session: Session, pilot: Pilot, holdout: Holdout) -> dict[str, Any]:
    """Customers per variant, and per reason for those without one (one GROUP BY in the database).

    Outer joins, not correlated subqueries, so a million customers are counted with hash joins:
    each customer has at most one assignment per pilot, one active enrolment of its home store per
    pilot and one claim per layer (unique constraints), so no row is counted twice."""
    c = _conditions(session, pilot, holdout)
    a, e, lm = Assignment.__table__.alias("a"), Enrolment.__table__.alias("e"), LayerMembership.__table__.alias("lm")
    status = case((a.c.variant.is_not(None), literal("variant:") + a.c.variant),
                  (e.c.id.is_(None), "store_not_enrolled"), (c["held"], "in_holdout"),
                  (~c["eligible"], "group_not_eligible"),
                  (and_(lm.c.pilot_id.is_not(None), lm.c.pilot_id != pilot.id), "in_other_pilot_of_layer"),
                  else_="not_yet_assigned").label("status")
    stmt = (select(status, func.count()).select_from(Customer)
            .outerjoin(a, and_(a.c.pilot_id == pilot.id, a.c.customer_id == Customer.id))
            .outerjoin(e, and_(e.c.pilot_id == pilot.id, e.c.store_id == Customer.home_store_id,
                               e.c.withdrawn_at.is_(None)))
            .outerjoin(lm, and_(lm.c.layer == pilot.layer, lm.c.customer_id == Customer.id))
            .group_by(status))
    rows = session.execute(stmt).all()
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


def allocation_changes(stage: Stage) -> list[datetime]:
    """The times at which the running stage's weights changed (stage.allocation_log): the ends of its
    allocation periods but the last."""
    return [datetime.fromisoformat(e["until"]) for e in stage.allocation_log or []]


def allocation_period(assigned_at: ColumnElement, ends: list[datetime]) -> ColumnElement:
    """The allocation period a unit was assigned in: 0 before the first of `ends`, and so on."""
    return case(*[(assigned_at < end, i) for i, end in enumerate(ends)], else_=len(ends)) if ends else literal(0)


def expected_shares(session: Session, pilot: Pilot, stage: Stage, cutoff: datetime | None = None,
                    arms: list[str] | None = None) -> dict[str, float] | None:
    """The share of a stage's units each arm should hold when the running stage's weights changed
    (None when they never did, or for a store-level pilot, whose arms are set at enrolment).

    Units keep the arm they got under the weights of their time, so the units assigned in each period
    between changes (stage.allocation_log) follow that period's weights, renormalised over `arms`
    (default: the arms with weight now, the ones an analysis compares), counting units assigned before
    `cutoff` (default: all). A ramp from 90/10 to 50/50 is then no sample-ratio mismatch; a broken
    assignment still is."""
    if not stage.allocation_log or pilot.unit != "customer":
        return None
    arms = arms if arms is not None else [k for k, w in stage.allocation.items() if w > 0]
    ends = allocation_changes(stage)
    weights = [e["allocation"] for e in stage.allocation_log] + [stage.allocation]
    period = allocation_period(Assignment.assigned_at, ends)
    stmt = select(period, func.count()).where(Assignment.pilot_id == pilot.id, Assignment.stage == stage.position,
                                              Assignment.variant.in_(arms)).group_by(period)
    units = session.execute(stmt if cutoff is None else stmt.where(Assignment.assigned_at < cutoff)).all()
    expected = dict.fromkeys(arms, 0.0)
    for i, n in units:
        total = sum(weights[i].get(k, 0.0) for k in arms)
        if total > 0:
            for k in arms:
                expected[k] += n * weights[i].get(k, 0.0) / total
    total = sum(expected.values())
    return {k: v / total for k, v in expected.items()} if total > 0 else None


def _new_customer(data: dict, t: AssignmentContext) -> dict | None:
    """The columns of the request's unknown customer (validated by NewCustomerIn), or None."""
    if t.customer_id is not None or data["new_customer"] is None:
        return None
    fields = data["new_customer"]
    if fields.get("home_store") is not None and t.new_home_id is None:
        raise Invalid(f"Unknown store {fields['home_store']!r}.",
                       details={"fields": {"new_customer": {"home_store": ["Unknown store."]}}})
    return customer_row(data["customer"], fields, t.new_home_id)


def assign_customer(tdb: AssignmentDb, key: str, data: dict, principal: Principal, hashed: str, held: Holdout) -> dict:
    """The answer to one assignment request (AssignIn's data) of a caller allowed to assign: the
    variant, or why there is none. Raises PilotError for a request that cannot be answered, and
    TokenNotLive when the token (by its hash) turns out revoked. Shared by the view and the lean
    path (pilot.api.fast_assignment), so both answer alike."""
    new_home = (data["new_customer"] or {}).get("home_store")
    t = read_context(tdb, hashed, key, data["customer"], data["store"], new_home)
    if t is None:
        raise TokenNotLive
    if t.pilot_id is None:
        raise NotFound(f"No pilot {key!r}.")
    # a store token acts for its own store: it buys there, and a customer it creates is homed there
    for code in (t.store_code, new_home):
        if code is not None and (refused := store_scope_error(principal, code)):
            raise refused
    if data["store"] is not None and t.store_id is None:
        raise Invalid(f"Unknown store {data['store']!r}.", details={"fields": {"store": ["Unknown store."]}})
    decision = assign_one(tdb, t, held, _new_customer(data, t))
    v = t.variant(decision.variant)
    return {"pilot": key, "customer": data["customer"], "assigned": v is not None,
            "reason": decision.reason, "assigned_at": decision.assigned_at, "new": decision.new,
            "variant": None if v is None else {**v, "description": describe(v["mechanic"], v["parameters"])}}


def srm_by_stage(session: Session, pilot: Pilot, by_stage: dict[int, dict[str, int]]) -> list[dict[str, Any]]:
    """χ² of each stage's assignments against that stage's weights (each period's units against the
    weights of their period when a running stage's weights changed: assignment.expected_shares)."""
    out = []
    for position, counts in sorted(by_stage.items()):
        stage = pilot.stage(position)
        keys = sorted(k for k in stage.allocation if stage.allocation[k] > 0 or counts.get(k))
        weights = expected_shares(session, pilot, stage, arms=keys) or stage.allocation
        res = srm_test([counts.get(k, 0) for k in keys], [weights.get(k, 0.0) for k in keys])
        finite = lambda x: x if x == x and x not in (float("inf"),) else None  # noqa: E731
        out.append({"stage": position, "counts": {k: counts.get(k, 0) for k in keys},
                    "weights": {k: weights.get(k, 0.0) for k in keys}, "statistic": finite(res.statistic),
                    "p_value": finite(res.p_value), "mismatch": res.mismatch})
    return out
