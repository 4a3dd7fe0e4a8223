"""The metric catalogue: what each metric counts and which direction is good."""
import marshmallow as ma
from flask.views import MethodView

from pilot.api.base import Blueprint, Schema
from pilot.metrics import catalogue

blp = Blueprint("metrics", __name__, url_prefix="/metrics", description="The metric catalogue")


class MetricSchema(Schema):
    key = ma.fields.String()
    kind = ma.fields.String()
    good_direction = ma.fields.String()
    description = ma.fields.String()


class MetricListSchema(Schema):
    items = ma.fields.List(ma.fields.Nested(MetricSchema))


@blp.route("")
class Metrics(MethodView):
    @blp.response(200, MetricListSchema)
    def get(self):
        """The metric catalogue: kind and good direction of each metric"""
        return {"items": catalogue()}
