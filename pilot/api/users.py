"""Users (admin): people with a role who sign in, their tokens, one-time reset links, disabling."""
import marshmallow as ma
from flask import url_for
from flask.views import MethodView

from pilot import users
from pilot.api.base import Blueprint, Schema, create_view, show_view, shown_once
from pilot.api.tokens import NewTokenSchema
from pilot.auth import current
from pilot.db import db
from pilot.models.tokens import ROLES

blp = Blueprint("users", __name__, url_prefix="/users", description="People who sign in (admin only)")


class UserIn(Schema):
    name = ma.fields.String(required=True, validate=ma.validate.Length(1, 200))
    email = ma.fields.String(required=True, validate=ma.validate.Length(3, 254))
    role = ma.fields.String(required=True, validate=ma.validate.OneOf(ROLES))
    store = ma.fields.String(load_default=None, allow_none=True, metadata={"description": "Store staff's store"})
    password = ma.fields.String(load_default=None, load_only=True, validate=ma.validate.Length(users.MIN_PASSWORD, 200),
                                metadata={"description": "Optional: without one the user signs in after a reset link "
                                          "(or never: a feed's service user has tokens only)"})


class UserSchema(Schema):
    id = ma.fields.Integer()
    name = ma.fields.String()
    email = ma.fields.String()
    role = ma.fields.String()
    store = ma.fields.Function(lambda u: u.store.code if u.store else None, allow_none=True)
    has_password = ma.fields.Function(lambda u: u.password_hash is not None)
    created_at = ma.fields.DateTime()
    disabled_at = ma.fields.DateTime(allow_none=True)


class UserTokenIn(Schema):
    name = ma.fields.String(required=True, validate=ma.validate.Length(1, 200))


class ResetLinkSchema(Schema):
    url = ma.fields.String(metadata={"description": "The one-time link; shown only now"})
    hours = ma.fields.Integer()


class DisabledSchema(UserSchema):
    tokens_revoked = ma.fields.Integer()


@blp.route("")
class Users(MethodView):
    @blp.response(200, UserSchema(many=True))
    def get(self):
        """List users"""
        return users.list_users(db.session)

    post = create_view(blp, UserIn, UserSchema, "Create a user", users.create_user)


@blp.route("/<int(max=2147483647):user_id>")
class UserById(MethodView):
    get = show_view(blp, UserSchema, "Show a user", users.get_user)


@blp.route("/<int(max=2147483647):user_id>/disable")
class UserDisable(MethodView):
    @blp.response(200, DisabledSchema)
    def post(self, user_id):
        """Disable a user: their tokens are revoked and their sessions end at once"""
        user = users.get_user(db.session, user_id)
        revoked = users.disable_user(db.session, current().actor, user)
        db.session.commit()
        user.tokens_revoked = revoked
        return user


@blp.route("/<int(max=2147483647):user_id>/reset-link")
class UserResetLink(MethodView):
    @blp.response(201, ResetLinkSchema)
    def post(self, user_id):
        """Issue a one-time password reset link (older ones stop working)"""
        secret = users.issue_reset(db.session, current().actor, users.get_user(db.session, user_id))
        db.session.commit()
        return {"url": url_for("pages.reset_password", secret=secret, _external=True),
                "hours": users.RESET_HOURS}, {"Cache-Control": "no-store"}


@blp.route("/<int(max=2147483647):user_id>/tokens")
class UserTokens(MethodView):
    @blp.arguments(UserTokenIn)
    @blp.response(201, NewTokenSchema)
    def post(self, data, user_id):
        """Create an API token of the user (their role and store; the audit names them)"""
        token, secret = users.issue_user_token(db.session, current().actor, users.get_user(db.session, user_id),
                                               data["name"])
        db.session.commit()
        return shown_once(token, token=secret)
