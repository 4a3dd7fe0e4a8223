"""The audit log, filterable by entity, action, actor and time."""
import marshmallow as ma
from flask.views import MethodView
from sqlalchemy import select

from pilot.api.base import Blueprint, PageArgs, Schema, page_schema, paginate
from pilot.db import db
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


@blp.route("")
class AuditEvents(MethodView):
    @blp.arguments(AuditArgs, location="query")
    @blp.response(200, page_schema(AuditEventSchema))
    def get(self, args):
        """List audit events"""
        stmt = select(AuditEvent)
        for name in ("entity_type", "entity_id", "action", "actor"):
            if name in args:
                stmt = stmt.where(getattr(AuditEvent, name) == args[name])
        if "since" in args:
            stmt = stmt.where(AuditEvent.at >= args["since"])
        if "until" in args:
            stmt = stmt.where(AuditEvent.at < args["until"])
        return paginate(db.session, stmt, AuditEvent.id, args["limit"], args["cursor"])
