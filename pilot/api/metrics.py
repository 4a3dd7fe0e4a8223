"""Metrics: the built-in catalogue and the definitions managers make (versioned; #25)."""
from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask.views import MethodView
from sqlalchemy.orm import Session

from pilot import metric_definitions as md
from pilot.api.base import Blueprint, Schema
from pilot.auth import current
from pilot.db import db
from pilot.errors import NotFound
from pilot.metric_spec import AGGREGATIONS, DIRECTIONS, KINDS, SOURCES, DefinedMetric
from pilot.metrics import CATALOGUE, catalogue

blp = Blueprint("metrics", __name__, url_prefix="/metrics",
                description="Metrics: the built-in catalogue and defined metrics over events or transactions")


class MeasureIn(Schema):
    source = ma.fields.String(allow_none=True, validate=ma.validate.OneOf(SOURCES))
    type = ma.fields.String(allow_none=True, metadata={"description": "Events: the event type counted"})
    filters = ma.fields.Dict(keys=ma.fields.String(), allow_none=True, metadata={
        "description": "Equality on event attributes (compared as text); transactions: type, channel"})
    aggregation = ma.fields.String(allow_none=True, validate=ma.validate.OneOf(AGGREGATIONS))
    field = ma.fields.String(allow_none=True, metadata={"description": "sum/max/last: events value; transactions "
                                                                        "amount, items, discount_cost, points_*"})
    value_at_least = ma.fields.Float(allow_none=True, metadata={"description": "Events count/any: values >= this"})


class MetricIn(MeasureIn):
    key = ma.fields.String(required=True)
    name = ma.fields.String(required=True)
    description = ma.fields.String(allow_none=True)
    good_direction = ma.fields.String(required=True, validate=ma.validate.OneOf(DIRECTIONS))
    kind = ma.fields.String(required=True, validate=ma.validate.OneOf(KINDS))
    covariate = ma.fields.Boolean(allow_none=True, metadata={
        "description": "Use the same measure over the pre-period as the CUPED covariate"})
    numerator = ma.fields.Nested(MeasureIn, allow_none=True, metadata={"description": "Ratio only"})
    denominator = ma.fields.Nested(MeasureIn, allow_none=True, metadata={"description": "Ratio only"})


class MetricPatch(MetricIn):
    reason = ma.fields.String(validate=ma.validate.Length(1, 1000), metadata={
        "description": "Needed when a live pilot measures the metric: the change is a plan amendment"})


class MetricSchema(Schema):
    key = ma.fields.String()
    kind = ma.fields.String()
    good_direction = ma.fields.String()
    description = ma.fields.String()
    name = ma.fields.String()
    origin = ma.fields.String(metadata={"description": "built_in (the catalogue) or defined"})
    source = ma.fields.String(metadata={"description": "transactions, events, or events+transactions"})
    version = ma.fields.Integer(allow_none=True)
    spec = ma.fields.Dict(allow_none=True)
    versions = ma.fields.List(ma.fields.Dict())
    live_pilots = ma.fields.List(ma.fields.String())
    locked = ma.fields.String(allow_none=True, metadata={"description": "Why a change needs a plan amendment"})


class MetricListSchema(Schema):
    items = ma.fields.List(ma.fields.Nested(MetricSchema))


def _source(metric: DefinedMetric) -> str:
    parts = [metric.measure] if metric.measure else [metric.numerator, metric.denominator]
    return "+".join(sorted({m.source for m in parts if m is not None}))


def defined_dict(metric: DefinedMetric) -> dict[str, Any]:
    """A defined metric as the API lists it."""
    return {"key": metric.key, "kind": metric.kind, "good_direction": metric.good_direction,
            "description": metric.description, "name": metric.name, "origin": "defined",
            "source": _source(metric), "version": metric.version, "spec": metric.spec()}


def built_in_dict(entry: dict[str, Any]) -> dict[str, Any]:
    """A catalogue entry (its keys as they always were) with what a defined metric also says."""
    return {**entry, "name": entry["key"].replace("_", " ").capitalize(), "origin": "built_in",
            "source": "transactions", "version": None, "spec": None}


def metric_detail(session: Session, key: str) -> dict[str, Any]:
    """One metric with its versions and the live pilots that measure it (and so lock it)."""
    if key in CATALOGUE:
        return {**built_in_dict(next(e for e in catalogue() if e["key"] == key)), "versions": [],
                "live_pilots": [], "locked": "A built-in metric cannot change."}
    metric = md.current(session, key)
    if metric is None:
        raise NotFound(f"No metric {key!r}; see /api/v1/metrics.")
    live = [p.key for p in md.pilots_using(session, key)]
    locked = (f"Live pilots measure it ({', '.join(live)}): a change is a plan amendment and needs a reason."
              if live else None)
    return {**defined_dict(metric), "versions": md.versions(session, key), "live_pilots": live, "locked": locked}


@blp.route("")
class Metrics(MethodView):
    @blp.response(200, MetricListSchema)
    def get(self):
        """Every metric: the built-in catalogue, then the defined metrics (current versions)"""
        return {"items": [built_in_dict(e) for e in catalogue()]
                + [defined_dict(m) for m in md.all_current(db.session)]}

    @blp.arguments(MetricIn)
    @blp.response(201, MetricSchema)
    @blp.alt_response(409, description="The key is taken (metric_exists)")
    def post(self, body):
        """Define a metric (version 1) over events or transactions"""
        metric = md.define(db.session, current().actor, body)
        db.session.commit()
        return metric_detail(db.session, metric.key)


@blp.route("/<key>")
class MetricByKey(MethodView):
    @blp.response(200, MetricSchema)
    def get(self, key):
        """One metric with its versions and the live pilots measuring it"""
        return metric_detail(db.session, key)

    @blp.arguments(MetricPatch(partial=True))
    @blp.response(200, MetricSchema)
    @blp.alt_response(409, description="A live pilot measures it and no reason was given (analysis_plan_locked)")
    def patch(self, body, key):
        """Change a defined metric: its next version (null removes a field)"""
        reason = body.pop("reason", None)
        md.redefine(db.session, current().actor, key, body, reason=reason)
        db.session.commit()
        return metric_detail(db.session, key)
