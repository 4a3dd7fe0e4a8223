"""Regions: create, list, show, rename, delete."""
import marshmallow as ma
from flask.views import MethodView

from pilot import stores
from pilot.api.base import Blueprint, Schema, list_view
from pilot.auth import current
from pilot.db import db
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

    @blp.arguments(RegionIn)
    @blp.response(201, RegionSchema)
    def post(self, data):
        """Create a region"""
        region = stores.create_region(db.session, current().actor, data)
        db.session.commit()
        return region


@blp.route("/<code>")
class RegionByCode(MethodView):
    @blp.response(200, RegionSchema)
    def get(self, code):
        """Show a region"""
        return stores.get_region(db.session, code)

    @blp.arguments(RegionPatch)
    @blp.response(200, RegionSchema)
    def patch(self, data, code):
        """Rename a region"""
        region = stores.update_region(db.session, current().actor, stores.get_region(db.session, code), data)
        db.session.commit()
        return region

    @blp.response(204)
    def delete(self, code):
        """Delete a region without stores"""
        stores.delete_region(db.session, current().actor, stores.get_region(db.session, code))
        db.session.commit()
