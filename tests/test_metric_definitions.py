"""Metric definitions: one check naming every wrong field, versions, the shipped set, the plan lock."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from pilot import metric_definitions as md
from pilot.db import db
from pilot.errors import Conflict, Invalid
from pilot.models import AnalysisPlan, AuditEvent, MetricDefinitionVersion, Pilot

BODY = {"key": "reviews_per_customer", "name": "Reviews per customer", "good_direction": "up", "kind": "mean",
        "source": "events", "type": "review", "aggregation": "count", "filters": {"channel": "app"}}


def fields(excinfo) -> dict:
    return excinfo.value.details["fields"]


@pytest.mark.parametrize("change, field", [
    ({"key": "Bad Key"}, "key"), ({"kind": "median"}, "kind"), ({"good_direction": "sideways"}, "good_direction"),
    ({"source": "emails"}, "source"), ({"type": None}, "type"), ({"aggregation": "sum"}, "field"),
    ({"aggregation": "any"}, "aggregation"), ({"field": "value"}, "field"), ({"filters": ["channel"]}, "filters"),
    ({"filters": {"channel": {"nested": 1}}}, "filters.channel"), ({"value_at_least": "nine"}, "value_at_least"),
    ({"covariate": "yes"}, "covariate"), ({"colour": "red"}, "colour"), ({"name": ""}, "name"),
    ({"numerator": {"source": "events"}}, "numerator"),
])
def test_every_wrong_field_is_named(change, field):
    with pytest.raises(Invalid) as excinfo:
        md.parse({k: v for k, v in {**BODY, **change}.items() if v is not None})
    assert field in fields(excinfo), fields(excinfo)


def test_transaction_measures_and_ratios_are_checked_part_by_part():
    body = {"key": "x", "name": "X", "good_direction": "down", "kind": "ratio",
            "numerator": {"source": "transactions", "filters": {"type": "gift", "store": "T1"}, "aggregation": "sum",
                          "field": "value"},
            "denominator": {"source": "events", "aggregation": "nps", "type": "survey_nps"}}
    with pytest.raises(Invalid) as excinfo:
        md.parse(body)
    assert set(fields(excinfo)) == {"numerator.filters.type", "numerator.filters.store", "numerator.field",
                                    "denominator.aggregation"}
    with pytest.raises(Invalid) as excinfo:
        md.parse({**BODY, "kind": "mean", "source": "transactions", "type": "sale", "aggregation": "nps"})
    assert {"type", "aggregation"} <= set(fields(excinfo))


def test_shipped_definitions_parse_and_are_inserted_once(app):
    with app.app_context():
        md.ensure_shipped(db.session)
        md.ensure_shipped(db.session)
        db.session.commit()
        keys = [m.key for m in md.all_current(db.session)]
        assert keys == sorted(b["key"] for b in md.SHIPPED)
        assert db.session.scalar(select(func.count()).select_from(MetricDefinitionVersion)) == len(md.SHIPPED)
        nps = md.current(db.session, "nps")
        assert (nps.kind, nps.covariate, nps.measure.aggregation, nps.measure.type) == ("mean", True, "nps", "survey_nps")
        refund = md.current(db.session, "refund_rate")
        assert refund.numerator.filters == {"type": "refund"} and refund.denominator.source == "transactions"
        assert md.is_metric_key(db.session, "nps") and md.is_metric_key(db.session, "spend_per_customer")
        assert not md.is_metric_key(db.session, "no_such_metric")


def test_define_and_redefine_make_versions_audited(app):
    with app.app_context():
        first = md.define(db.session, "ann", BODY)
        with pytest.raises(Conflict) as excinfo:
            md.define(db.session, "ann", BODY)
        assert excinfo.value.code == "metric_exists"
        with pytest.raises(Conflict):
            md.define(db.session, "ann", {**BODY, "key": "spend_per_customer"})
        second = md.redefine(db.session, "bob", BODY["key"], {"filters": None, "covariate": True})
        third = md.redefine(db.session, "bob", BODY["key"], {"kind": "ratio", "numerator": {
            "source": "events", "type": "review", "aggregation": "count"}, "denominator": {
            "source": "transactions", "aggregation": "count"}})
        db.session.commit()
        assert (first.version, second.version, third.version) == (1, 2, 3)
        assert md.current(db.session, BODY["key"]) == third and third.measure is None
        assert md.at_version(db.session, BODY["key"], 1) == first
        assert md.at_version(db.session, BODY["key"], 2).measure.filters == {}
        assert md.at_version(db.session, BODY["key"], 9) is None and md.current(db.session, "none") is None
        with pytest.raises(Invalid):
            md.redefine(db.session, "bob", BODY["key"], {"name": third.name})
        actions = db.session.execute(select(AuditEvent.action, AuditEvent.actor)
                                     .where(AuditEvent.entity_type == "metric").order_by(AuditEvent.id)).all()
        assert [tuple(a) for a in actions] == [("create", "ann"), ("update", "bob"), ("update", "bob")]


def test_a_live_pilot_locks_its_metric_unless_amended_with_a_reason(app, client, running):
    with app.app_context():
        md.define(db.session, "ann", BODY)
        pilot = db.session.scalar(select(Pilot).filter_by(key="p1"))
        pilot.guardrails = [*pilot.guardrails, {"metric": BODY["key"], "max_harm": 0.05}]
        db.session.commit()
        version = pilot.plan_version
        with pytest.raises(Conflict) as excinfo:
            md.redefine(db.session, "bob", BODY["key"], {"type": "review_written"})
        assert excinfo.value.code == "analysis_plan_locked" and excinfo.value.details["pilots"] == ["p1"]
        md.redefine(db.session, "bob", BODY["key"], {"type": "review_written"}, reason="the app renamed it")
        db.session.commit()
        plan = db.session.scalar(select(AnalysisPlan).filter_by(pilot_id=pilot.id, version=version + 1))
        assert plan.reason == "the app renamed it" and plan.plan["metric_definitions"] == {BODY["key"]: 2}
        assert db.session.get(Pilot, pilot.id).plan_version == version + 1
