"""The audit log, filterable by entity, action, actor and time."""
import marshmallow as ma
from flask.views import MethodView
from sqlalchemy import Select

from pilot.api.base import Blueprint, PageArgs, Schema, list_view
from pilot.models import AuditEvent

blp = Blueprint("audit", __name__, url_prefix="/audit", description="Audit log (admin only)")


class AuditArgs(PageArgs):
    entity_type = ma.fields.String()
    entity_id = ma.fields.String()
    action = ma.fields.String()
    actor = ma.fields.String()
    since = ma.fields.AwareDateTime(default_timezone=None)
    until = ma.fields.AwareDateTime(default_timezone=None)


class AuditEventSchema(Schema):
    id = ma.fields.Integer()
    at = ma.fields.DateTime()
    actor = ma.fields.String()
    action = ma.fields.String()
    entity_type = ma.fields.String()
    entity_id = ma.fields.String(allow_none=True)
    before = ma.fields.Dict(allow_none=True)
    after = ma.fields.Dict(allow_none=True)


def _in_window(stmt: Select, args: dict) -> Select:
    """The events at `since` or later and before `until`, where given."""
    if "since" in args:
        stmt = stmt.where(AuditEvent.at >= args["since"])
    if "until" in args:
        stmt = stmt.where(AuditEvent.at < args["until"])
    return stmt


@blp.route("")
class AuditEvents(MethodView):
    get = list_view(blp, AuditEvent, AuditEventSchema, "List audit events", AuditArgs,
                    ("entity_type", "entity_id", "action", "actor"), refine=_in_window)
