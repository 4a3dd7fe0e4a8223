"""Customer events in: the row kind the one ingestion path (pilot.ingestion) takes for `customer_events`.

An event has an id unique per source, the customer's external id, a time with its UTC offset, a free
`type` (survey_nps, app_session, referral…), an optional number `value` (an NPS answer 0-10), an optional
store code and free attributes: a JSON object in a JSON batch, `attr.<name>` columns in a CSV. Attribute
values are kept as text (a JSON number 5 is "5", true is "true"), so a metric's attribute filter means
the same whichever way the event came in (docs/events_and_metrics.md).
"""
from __future__ import annotations

import json
import math
import re
from datetime import datetime
from typing import Any

from pilot.ingestion import RowError, RowKind, _number, _text, _time, check_record
from pilot.metric_spec import attribute_text
from pilot.sqltime import sqlite_text

FIELDS = ("event_id", "customer", "occurred_at", "type", "value", "store", "attributes")
FIELD_SET = frozenset(FIELDS)
CSV_FIELDS = FIELDS[:-1]
REQUIRED = ("event_id", "customer", "occurred_at", "type")
ATTRIBUTE_PREFIX = "attr."
MAX_ATTRIBUTES = 50
MAX_ATTRIBUTE_CHARS = 500
MAX_VALUE = 1e12
NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def _attributes(raw: dict) -> str:
    value = raw.get("attributes")
    if value is None or value == {}:
        return "{}"
    if not isinstance(value, dict):
        raise RowError("attributes", "Not an object of name: value (in a CSV, attr.<name> columns).")
    if len(value) > MAX_ATTRIBUTES:
        raise RowError("attributes", f"More than {MAX_ATTRIBUTES} attributes ({len(value)}).")
    out = {}
    for name, item in value.items():
        if not NAME.match(name):
            raise RowError("attributes", f"Attribute name {name[:64]!r}: 1-64 letters, digits, _ . : -")
        if item is None or item == "":
            continue
        if isinstance(item, (dict, list)) or isinstance(item, float) and not math.isfinite(item):
            raise RowError(f"attributes.{name}", "A text, number or true/false.")
        text = attribute_text(item).strip()
        if len(text) > MAX_ATTRIBUTE_CHARS:
            raise RowError(f"attributes.{name}", f"Longer than {MAX_ATTRIBUTE_CHARS} characters ({len(text)}).")
        if "\x00" in text:
            raise RowError(f"attributes.{name}", "Contains a NUL character (PostgreSQL text cannot hold it).")
        out[name] = text
    return json.dumps(out, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def parse_event(raw: Any, stores: dict[str, int], latest: datetime) -> tuple:
    """One raw event (JSON object or CSV record) as a staging tuple without its row number."""
    check_record(raw, FIELD_SET)
    event_id = _text(raw, "event_id", 128)
    customer = _text(raw, "customer", 128)
    moment = _time(raw, latest)
    kind = _text(raw, "type", 64)
    value = _number(raw, "value", places=None)
    if value is not None and abs(value) >= MAX_VALUE:
        raise RowError("value", f"Out of range (at most {MAX_VALUE:.0e} in size).")
    code = _text(raw, "store", 64, required=False)
    store_id = None if code is None else stores.get(code)
    if code is not None and store_id is None:
        raise RowError("store", f"Unknown store {code!r}.")
    return (event_id, customer, store_id, moment, kind, None if value is None else float(value), _attributes(raw))


def _sqlite_event(row: tuple) -> tuple:
    r = list(row)
    r[4] = sqlite_text(r[4])
    return tuple(r)


EVENTS = RowKind(
    name="events", table="customer_events", fields=FIELDS, required=REQUIRED, csv_fields=CSV_FIELDS,
    parse=parse_event, columns=("store_id", "occurred_at", "type", "value", "attributes"), to_sqlite=_sqlite_event,
    staging="store_id INTEGER, occurred_at {moment} NOT NULL, type VARCHAR(64) NOT NULL, value DOUBLE PRECISION, "
            "attributes TEXT NOT NULL",
    json_columns=("attributes",), extra_prefix=ATTRIBUTE_PREFIX)
