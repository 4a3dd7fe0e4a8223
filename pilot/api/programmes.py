"""Programmes and their variants, each variant a mechanic with validated parameters."""
import marshmallow as ma
from flask.views import MethodView

from pilot import programmes as domain
from pilot.api.base import Blueprint, Schema, create_view, delete_view, list_view, show_view, update_view
from pilot.mechanics import describe
from pilot.models import Programme
from pilot.setup_schemas import ProgrammeIn, VariantIn  # the forms' schemas too: one validation

blp = Blueprint("programmes", __name__, url_prefix="/programmes", description="Programmes and variants")


class ProgrammePatch(Schema):
    name = ma.fields.String(validate=ma.validate.Length(1, 200))
    description = ma.fields.String(validate=ma.validate.Length(max=2000))
    variants = ma.fields.List(ma.fields.Nested(VariantIn), validate=ma.validate.Length(1, 20),
                              metadata={"description": "Variants to add or replace by key"})


class VariantSchema(Schema):
    key = ma.fields.String()
    name = ma.fields.String()
    mechanic = ma.fields.String()
    parameters = ma.fields.Dict()
    description = ma.fields.Function(lambda v: describe(v.mechanic, v.parameters))


class ProgrammeSchema(Schema):
    id = ma.fields.Integer()
    key = ma.fields.String()
    name = ma.fields.String()
    description = ma.fields.String()
    variants = ma.fields.List(ma.fields.Nested(VariantSchema))


@blp.route("")
class Programmes(MethodView):
    get = list_view(blp, Programme, ProgrammeSchema, "List programmes")
    post = create_view(blp, ProgrammeIn, ProgrammeSchema, "Create a programme with its variants",
                       domain.create_programme)


@blp.route("/<key>")
class ProgrammeByKey(MethodView):
    get = show_view(blp, ProgrammeSchema, "Show a programme", domain.get_programme)
    patch = update_view(blp, ProgrammePatch, ProgrammeSchema,
                        "Change a programme (variants only while none of its pilots is live)",
                        domain.get_programme, domain.update_programme)
    delete = delete_view(blp, "Delete a programme without pilots", domain.get_programme, domain.delete_programme)
