"""The base of every input schema, the API's and the pages': unknown fields refused, field order kept,
and no NUL character in any string (PostgreSQL text cannot hold one)."""
from __future__ import annotations

import marshmallow as ma

NUL_MESSAGE = "Must not contain NUL characters (PostgreSQL text cannot hold them)."
# the keys of regions, stores, programmes, variants, pilots and layers; of customer groups (one definition
# each: the API's schemas and the pages' forms validate with these)
CODE = ma.validate.Regexp(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
                          error="1 to 64 letters, digits, _ . or - (no spaces), starting with a letter or digit.")
GROUP_KEY = ma.validate.Regexp(r"^[a-z][a-z0-9_]{0,63}$",
                               error="1 to 64 lowercase letters, digits and _, starting with a letter.")
NAME = ma.validate.Length(1, 200, error="Give it a name of at most {max} characters.")  # what people read


def has_nul(value: object) -> bool:
    """Whether a JSON value holds a NUL character in any string, key or value, at any depth."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_nul(v) for v in value)
    return False


class Schema(ma.Schema):
    """Rejects unknown fields and NUL characters; keeps field order."""

    class Meta:
        unknown = ma.RAISE
        ordered = True

    @ma.pre_load
    def _refuse_nul(self, data, **_kwargs):
        """A 422 naming the field, not a database error: PostgreSQL text cannot hold NUL (a nested
        schema checks its own fields)."""
        if isinstance(data, dict):
            nested = _nested_keys(self)
            bad = {k: [NUL_MESSAGE] for k, v in data.items() if k not in nested and has_nul(v)}
            if bad:
                raise ma.ValidationError(bad)
        return data


def _nested_keys(schema: ma.Schema) -> set[str]:
    """The input keys of a schema's fields that load through a schema of their own."""
    def nested(field: ma.fields.Field) -> bool:
        return isinstance(field, ma.fields.Nested) or isinstance(getattr(field, "inner", None), ma.fields.Nested)
    return {f.data_key or name for name, f in schema.load_fields.items() if nested(f)}
