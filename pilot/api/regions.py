"""Regions: create, list, show, rename, delete."""
import marshmallow as ma
from flask.views import MethodView

from pilot import stores
from pilot.api.base import Blueprint, Schema, create_view, delete_view, list_view, show_view, update_view
from pilot.models import Region

blp = Blueprint("regions", __name__, url_prefix="/regions", description="Regions")

CODE = ma.validate.Regexp(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", error="1-64 letters, digits, _ . -")


class RegionIn(Schema):
    code = ma.fields.String(required=True, validate=CODE)
    name = ma.fields.String(required=True, validate=ma.validate.Length(1, 200))


class RegionPatch(Schema):
    name = ma.fields.String(required=True, validate=ma.validate.Length(1, 200))


class RegionSchema(Schema):
    id = ma.fields.Integer()
    code = ma.fields.String()
    name = ma.fields.String()


@blp.route("")
class Regions(MethodView):
    get = list_view(blp, Region, RegionSchema, "List regions")
    post = create_view(blp, RegionIn, RegionSchema, "Create a region", stores.create_region)


@blp.route("/<code>")
class RegionByCode(MethodView):
    get = show_view(blp, RegionSchema, "Show a region", stores.get_region)
    patch = update_view(blp, RegionPatch, RegionSchema, "Rename a region", stores.get_region, stores.update_region)
    delete = delete_view(blp, "Delete a region without stores", stores.get_region, stores.delete_region)
