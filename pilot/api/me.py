"""Who am I: the calling token's name, role and store."""
import marshmallow as ma
from flask.views import MethodView

from pilot.api.base import Blueprint, Schema
from pilot.auth import current

blp = Blueprint("me", __name__, url_prefix="/me", description="The calling token")


class MeSchema(Schema):
    name = ma.fields.String()
    role = ma.fields.String()
    store = ma.fields.String(allow_none=True)


@blp.route("")
class Me(MethodView):
    @blp.response(200, MeSchema)
    def get(self):
        """Describe the calling token"""
        p = current()
        return {"name": p.name, "role": p.role, "store": p.store_code}
