"""API tokens: admins create, list and revoke them; the secret is shown once."""
import marshmallow as ma
from flask.views import MethodView
from sqlalchemy.orm import Session

from pilot.api.base import Blueprint, Schema, create_view, list_view
from pilot.audit import record
from pilot.auth import current, issue_token, revoke_token, token_dict
from pilot.db import db, found
from pilot.models import ApiToken
from pilot.models.tokens import ROLES
from pilot.stores import get_store

blp = Blueprint("tokens", __name__, url_prefix="/tokens", description="API tokens (admin only)")


class TokenIn(Schema):
    name = ma.fields.String(required=True, validate=ma.validate.Length(1, 200))
    role = ma.fields.String(required=True, validate=ma.validate.OneOf(ROLES))
    store = ma.fields.String(load_default=None, allow_none=True)


class TokenSchema(Schema):
    id = ma.fields.Integer()
    name = ma.fields.String()
    role = ma.fields.String()
    store = ma.fields.Function(lambda t: t.store.code if t.store else None, allow_none=True)
    prefix = ma.fields.String()
    created_at = ma.fields.DateTime()
    revoked_at = ma.fields.DateTime(allow_none=True)
    last_used_at = ma.fields.DateTime(allow_none=True, metadata={
        "description": "When the token last authenticated an API request (recorded at most once a minute)."})
    user_id = ma.fields.Integer(allow_none=True, metadata={
        "description": "The person the token belongs to (/api/v1/users); null for a token of nobody"})


class NewTokenSchema(TokenSchema):
    token = ma.fields.String(metadata={"description": "The secret; shown only now."})


def _create(session: Session, actor: str, data: dict) -> tuple[ApiToken, str]:
    """A token of nobody (a user's tokens are made under /users), audited: the row and its secret."""
    store = get_store(session, data["store"]) if data["store"] else None
    token, secret = issue_token(session, data["name"], data["role"], store)
    record(session, actor, "create", "api_token", token.id, after=token_dict(token))
    return token, secret


@blp.route("")
class Tokens(MethodView):
    get = list_view(blp, ApiToken, TokenSchema, "List tokens")
    post = create_view(blp, TokenIn, NewTokenSchema, "Create a token", _create, secret="token")


@blp.route("/<int(max=2147483647):token_id>")
class TokenById(MethodView):
    @blp.response(200, TokenSchema)
    def get(self, token_id):
        """Show a token"""
        return _token(token_id)

    @blp.response(200, TokenSchema)
    def delete(self, token_id):
        """Revoke a token"""
        token = _token(token_id)
        revoke_token(db.session, current().actor, token)
        db.session.commit()
        return token


def _token(token_id: int) -> ApiToken:
    return found(db.session, ApiToken, f"No token {token_id}.", id=token_id)
