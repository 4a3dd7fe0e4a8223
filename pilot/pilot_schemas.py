"""What a pilot and its stages are made of, as input: the schemas the API and the pilot form both load
with (one validation). The rules across fields and rows (a control in every allocation, known stores…)
are pilot.rollout's."""
from __future__ import annotations

import marshmallow as ma

from pilot.input_schema import CODE, NAME, Schema

# a catalogue key or a defined metric's key (pilot.metric_definitions.is_metric_key, checked by pilot.rollout)
METRIC = ma.validate.Regexp(r"^[a-z][a-z0-9_]{0,63}$", error="A metric key (see /api/v1/metrics).")


class GateSchema(Schema):
    min_days = ma.fields.Integer(validate=ma.validate.Range(0, 365))
    min_units_per_arm = ma.fields.Integer(validate=ma.validate.Range(0, 10**9))
    require_significant = ma.fields.Boolean()
    min_roi = ma.fields.Float(validate=ma.validate.Range(-10, 100))
    no_guardrail_harm = ma.fields.Boolean()
    no_srm = ma.fields.Boolean()


class StageIn(Schema):
    name = ma.fields.String(validate=NAME)
    store_codes = ma.fields.List(ma.fields.String(), load_default=list)
    region_codes = ma.fields.List(ma.fields.String(), load_default=list)
    allocation = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Float(validate=ma.validate.Range(0, 1)),
                                required=True, metadata={"description": "Variant key -> weight; sums to 1"})
    eligible_groups = ma.fields.List(ma.fields.String(), load_default=None, allow_none=True,
                                     metadata={"description": "Customer group keys; null for everyone"})
    planned_start = ma.fields.Date(load_default=None, allow_none=True)
    planned_end = ma.fields.Date(load_default=None, allow_none=True)
    gate = ma.fields.Nested(GateSchema, load_default=dict)


class GuardrailSchema(Schema):
    metric = ma.fields.String(required=True, validate=METRIC)
    max_harm = ma.fields.Float(load_default=0.0, validate=ma.validate.Range(0, 1),
                               metadata={"description": "Relative harm tolerated before the guardrail trips"})


class PilotIn(Schema):
    key = ma.fields.String(required=True, validate=CODE)
    name = ma.fields.String(required=True, validate=NAME)
    programme = ma.fields.String(required=True)
    unit = ma.fields.String(load_default="customer", validate=ma.validate.OneOf(["customer", "store"]))
    primary_metric = ma.fields.String(load_default="spend_per_customer", validate=METRIC)
    guardrails = ma.fields.List(ma.fields.Nested(GuardrailSchema), load_default=list)
    alpha = ma.fields.Float(load_default=0.05, validate=ma.validate.Range(0.001, 0.5))
    power = ma.fields.Float(load_default=0.8, validate=ma.validate.Range(0.5, 0.999))
    mde = ma.fields.Float(load_default=0.02, validate=ma.validate.Range(0.0001, 10),
                          metadata={"description": "Minimum relative effect worth detecting"})
    margin_rate = ma.fields.Float(load_default=0.3, validate=ma.validate.Range(0.001, 1))
    layer = ma.fields.String(load_default="default", validate=CODE)
    salt = ma.fields.String(load_default=None, validate=ma.validate.Length(1, 64))
    stages = ma.fields.List(ma.fields.Nested(StageIn), required=True, validate=ma.validate.Length(1, 20))
    approval = ma.fields.String(load_default="none", validate=ma.validate.OneOf(["none", "second_person"]))
    independent_of = ma.fields.List(ma.fields.String(validate=CODE), load_default=list,
                                    validate=ma.validate.Length(0, 50))
