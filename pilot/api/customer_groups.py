"""Customer groups: ordered rules, first match wins, everyone else is 'other'."""
import marshmallow as ma
from flask.views import MethodView

from pilot import customers as domain
from pilot.api.base import Blueprint, Schema, create_view, delete_view, list_view, show_view
from pilot.auth import current
from pilot.customer_groups import preview, saved_groups
from pilot.db import db
from pilot.errors import Invalid
from pilot.models import CustomerGroup
from pilot.setup_schemas import GroupIn, RuleSchema  # the forms' schemas too: one validation

blp = Blueprint("customer_groups", __name__, url_prefix="/customer-groups", description="Customer groups")

# PATCH may leave out any of a group's fields, but not a field of a rule it sends (partial=True would
# reach into the nested rules, and a rule without its op is no rule).
GROUP_FIELDS = tuple(GroupIn().fields)


class GroupSchema(Schema):
    id = ma.fields.Integer()
    key = ma.fields.String()
    name = ma.fields.String()
    position = ma.fields.Integer()
    rules = ma.fields.List(ma.fields.Dict())


class PreviewGroupIn(Schema):
    key = ma.fields.String(required=True, validate=GroupIn().fields["key"].validators)
    name = ma.fields.String(load_default="")
    rules = ma.fields.List(ma.fields.Nested(RuleSchema), load_default=list)


class PreviewIn(Schema):
    groups = ma.fields.List(ma.fields.Nested(PreviewGroupIn),
                            metadata={"description": "Groups to try, in order; omit to use the saved ones"})

    @ma.validates("groups")
    def _unique(self, groups, **_kwargs):
        keys = [g["key"] for g in groups if "key" in g]  # (a group without one has its own error)
        if len(keys) != len(set(keys)):
            raise ma.ValidationError("Group keys must be unique.")


class PreviewSchema(Schema):
    counts = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Integer())
    total = ma.fields.Integer()


@blp.route("")
class CustomerGroups(MethodView):
    get = list_view(blp, CustomerGroup, GroupSchema, "List customer groups in their order (first match wins)",
                    by="position")

    post = create_view(blp, GroupIn, GroupSchema, "Create a customer group", domain.create_group)


@blp.route("/preview")
class CustomerGroupPreview(MethodView):
    @blp.arguments(PreviewIn)
    @blp.response(200, PreviewSchema)
    def post(self, data):
        """Count the customers each group would hold, before saving"""
        groups = data.get("groups")
        return preview(db.session, saved_groups(db.session) if groups is None else groups)


@blp.route("/<key>")
class CustomerGroupByKey(MethodView):
    get = show_view(blp, GroupSchema, "Show a customer group", domain.get_group)

    @blp.arguments(GroupIn(partial=GROUP_FIELDS))
    @blp.response(200, GroupSchema)
    def patch(self, data, key):
        """Change a customer group's name, rules or position"""
        if data.get("key", key) != key:
            raise Invalid("A group's key cannot change.", details={"fields": {"key": ["Read-only."]}})
        data.pop("key", None)
        group = domain.update_group(db.session, current().actor, domain.get_group(db.session, key), data)
        db.session.commit()
        return group

    delete = delete_view(blp, "Delete a customer group", domain.get_group, domain.delete_group)
