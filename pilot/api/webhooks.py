"""Webhooks (admin): URL, events, a signing secret shown once; each delivery and its attempts."""
import marshmallow as ma
from flask.views import MethodView

from pilot import webhooks
from pilot.api.base import Blueprint, Schema, create_view, delete_view, list_view, show_view, update_view
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
    post = create_view(blp, WebhookIn, NewWebhookSchema, "Create a webhook", webhooks.create_webhook, secret="secret")


@blp.route("/<int(max=2147483647):webhook_id>")
class WebhookById(MethodView):
    get = show_view(blp, WebhookSchema, "Show a webhook", webhooks.get_webhook)
    patch = update_view(blp, WebhookPatch, WebhookSchema, "Change a webhook (URL, events, description, disabled)",
                        webhooks.get_webhook, webhooks.update_webhook)
    delete = delete_view(blp, "Delete a webhook and its delivery log", webhooks.get_webhook, webhooks.delete_webhook)


@blp.route("/<int(max=2147483647):webhook_id>/deliveries")
class WebhookDeliveries(MethodView):
    get = list_view(blp, WebhookDelivery, DeliverySchema,
                    "The webhook's deliveries, oldest first, each with its attempts",
                    parent=(webhooks.get_webhook, WebhookDelivery.webhook_id))
