"""What a programme (its variants) and a customer group are made of, as input: the schemas the programme
and group forms load with, the same fields, limits and keys as the API's (pilot/api/programmes.py,
pilot/api/customer_groups.py; tests/test_workspace.py compares them), so a form and an API call accept
and refuse the same things. A variant's parameters are its mechanic's (pilot.mechanics)."""
from __future__ import annotations

import marshmallow as ma

from pilot.customer_groups import OPERATORS, OTHER, rule_problem
from pilot.input_schema import CODE, GROUP_KEY, NAME, Schema
from pilot.mechanics import MECHANICS


class VariantIn(Schema):
    key = ma.fields.String(required=True, validate=CODE)
    name = ma.fields.String(load_default=None, validate=NAME)
    mechanic = ma.fields.String(required=True, validate=ma.validate.OneOf(MECHANICS))
    parameters = ma.fields.Dict(keys=ma.fields.String(), load_default=dict,
                                metadata={"description": "Validated by the mechanic's own schema"})


class ProgrammeIn(Schema):
    key = ma.fields.String(required=True, validate=CODE)
    name = ma.fields.String(required=True, validate=NAME)
    description = ma.fields.String(load_default="", validate=ma.validate.Length(max=2000))
    variants = ma.fields.List(ma.fields.Nested(VariantIn), required=True, validate=ma.validate.Length(1, 20))


class RuleSchema(Schema):
    attribute = ma.fields.String(required=True, validate=ma.validate.Length(
        1, 64, error="Choose an attribute (a name of at most {max} characters)."))
    op = ma.fields.String(required=True, validate=ma.validate.OneOf(OPERATORS))
    value = ma.fields.Raw(allow_none=True)

    @ma.validates_schema
    def _check(self, data, **_kwargs):
        problem = rule_problem(data)
        if problem:
            raise ma.ValidationError(problem, "value")


class GroupIn(Schema):
    key = ma.fields.String(required=True, validate=[GROUP_KEY, ma.validate.NoneOf(
        [OTHER], error="“other” holds the customers in no group; choose another key.")])
    name = ma.fields.String(required=True, validate=NAME)
    position = ma.fields.Integer(validate=ma.validate.Range(1, 1000))
    rules = ma.fields.List(ma.fields.Nested(RuleSchema), load_default=list)
