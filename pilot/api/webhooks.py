"""Webhooks (admin): URL, events, a signing secret shown once; each delivery and its attempts."""
import marshmallow as ma
from flask.views import MethodView
from sqlalchemy import select

from pilot import webhooks
from pilot.api.base import Blueprint, PageArgs, Schema, list_view, page_schema, paginate
from pilot.auth import current
from pilot.db import db
from pilot.models import Webhook, WebhookDelivery

blp = Blueprint("webhooks", __name__, url_prefix="/webhooks", description="Webhooks and their deliveries (admin only)")

EVENTS = ma.fields.List(ma.fields.String(validate=ma.validate.OneOf(webhooks.EVENTS)),
                        validate=ma.validate.Length(1, len(webhooks.EVENTS)))


class WebhookIn(Schema):
    url = ma.fields.String(required=True, validate=ma.validate.Length(10, 2000), metadata={
        "description": "http(s) URL (Slack and Teams incoming webhooks show the `text` field), or mailto:<address> "
                       "with PILOT_SMTP_HOST"})
    events = EVENTS
    description = ma.fields.String(load_default=None, validate=ma.validate.Length(0, 200))


class WebhookPatch(Schema):
    url = ma.fields.String(validate=ma.validate.Length(10, 2000))
    events = EVENTS
    description = ma.fields.String(validate=ma.validate.Length(0, 200))
    disabled = ma.fields.Boolean()


class WebhookSchema(Schema):
    id = ma.fields.Integer()
    url = ma.fields.String()
    events = ma.fields.List(ma.fields.String())
    description = ma.fields.String(allow_none=True)
    created_by = ma.fields.String()
    created_at = ma.fields.DateTime()
    disabled_at = ma.fields.DateTime(allow_none=True)


class NewWebhookSchema(WebhookSchema):
    secret = ma.fields.String(metadata={"description": "The signing secret; shown only now"})


class DeliverySchema(Schema):
    id = ma.fields.Integer()
    event = ma.fields.String()
    status = ma.fields.String(metadata={"description": "pending, delivered or failed (after the last retry)"})
    attempts = ma.fields.Integer()
    attempt_log = ma.fields.List(ma.fields.Dict(), metadata={"description": "Every attempt: at, status, error, ms"})
    payload = ma.fields.Dict()
    created_at = ma.fields.DateTime()
    next_attempt_at = ma.fields.DateTime()
    delivered_at = ma.fields.DateTime(allow_none=True)


@blp.route("")
class Webhooks(MethodView):
    get = list_view(blp, Webhook, WebhookSchema, "List webhooks")

    @blp.arguments(WebhookIn)
    @blp.response(201, NewWebhookSchema)
    def post(self, data):
        """Create a webhook"""
        webhook, secret = webhooks.create_webhook(db.session, current().actor, data)
        db.session.commit()
        webhook.secret = secret
        return webhook, {"Cache-Control": "no-store"}


@blp.route("/<int(max=2147483647):webhook_id>")
class WebhookById(MethodView):
    @blp.response(200, WebhookSchema)
    def get(self, webhook_id):
        """Show a webhook"""
        return webhooks.get_webhook(db.session, webhook_id)

    @blp.arguments(WebhookPatch)
    @blp.response(200, WebhookSchema)
    def patch(self, data, webhook_id):
        """Change a webhook (URL, events, description, disabled)"""
        webhook = webhooks.update_webhook(db.session, current().actor, webhooks.get_webhook(db.session, webhook_id),
                                          data)
        db.session.commit()
        return webhook

    @blp.response(204)
    def delete(self, webhook_id):
        """Delete a webhook and its delivery log"""
        webhooks.delete_webhook(db.session, current().actor, webhooks.get_webhook(db.session, webhook_id))
        db.session.commit()


@blp.route("/<int(max=2147483647):webhook_id>/deliveries")
class WebhookDeliveries(MethodView):
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, page_schema(DeliverySchema))
    def get(self, args, webhook_id):
        """The webhook's deliveries, oldest first, each with its attempts"""
        webhook = webhooks.get_webhook(db.session, webhook_id)
        stmt = select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook.id)
        return paginate(db.session, stmt, WebhookDelivery.id, args["limit"], args["cursor"])
