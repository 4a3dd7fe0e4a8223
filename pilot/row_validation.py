"""Row-by-row validation shared by every bulk path: JSON batches and streamed CSV.

A streamed CSV is bounded while it is read (pilot.api.bodies bounds the body itself): the length of one
line (PILOT_MAX_LINE_BYTES), the columns of the header (PILOT_MAX_CSV_COLUMNS) and one field (the csv
module's field limit), so no input makes a worker hold more than a line in memory or spin on it.
"""
from __future__ import annotations

import codecs
import csv
import math
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import IO, Any

import marshmallow as ma
from flask import current_app

from pilot.errors import Invalid, PilotError, TooLarge

MAX_REPORTED = 1000
READ_SIZE = 1 << 16  # bytes a streamed body is read in


def finite_json(value: Any) -> None:
    """A marshmallow validator: no NaN or infinite number anywhere in a JSON value (JSON cannot hold
    them, and PostgreSQL refuses them)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ma.ValidationError("Numbers must be finite (no NaN or Infinity).")
    for item in value.values() if isinstance(value, dict) else value if isinstance(value, list) else ():
        finite_json(item)


def csv_rows(stream: IO[bytes], required: Iterable[str], known: Iterable[str],
             extra_into: str | None = None, extra_prefix: str = "") -> Iterator[tuple[int, dict[str, Any]]]:
    """Stream a CSV (UTF-8, BOM allowed) as (row number, record); empty cells are missing. With
    `extra_into`, the other columns (those named `extra_prefix<name>`, any other column refused) go into
    that field as {name: text}. Lines and the header are bounded by the app's settings (module docstring)."""
    config = current_app.config
    reader = csv.reader(_lines(stream, config["MAX_LINE_BYTES"]))
    return _records(reader, required, known, extra_into, config["MAX_CSV_COLUMNS"], extra_prefix)


def _lines(stream: IO[bytes], limit: int) -> Iterator[str]:
    """The stream's lines (ended by \\n, \\r\\n or a lone \\r, as io's universal newlines end them), decoded,
    each at most `limit` bytes: the csv module reads a line whole, so a body without line breaks would
    otherwise be held in memory however large it is."""
    pending, number = b"", 0
    block = stream.read(READ_SIZE).removeprefix(codecs.BOM_UTF8)
    while block:
        lines = (pending + block).splitlines(keepends=True)
        # the last piece may go on in the next block (a lone \\r too: it may be the start of \\r\\n)
        pending = b"" if lines[-1].endswith(b"\n") else lines.pop()
        if len(pending) > limit or lines and max(map(len, lines)) > limit:
            raise _too_long(number, [*lines, pending], limit)
        number += len(lines)
        yield from map(bytes.decode, lines)
        block = stream.read(READ_SIZE)
    if pending:
        yield pending.decode()


def _too_long(before: int, lines: list[bytes], limit: int) -> PilotError:
    """The 413 of the first line over the limit among `lines`, which follow line number `before`."""
    number = before + 1 + next(i for i, line in enumerate(lines) if len(line) > limit)
    return TooLarge(f"Line {number} is longer than PILOT_MAX_LINE_BYTES ({limit} bytes).",
                    details={"limit_bytes": limit, "line": number})


def _records(reader: Iterator[list[str]], required: Iterable[str], known: Iterable[str],
             extra_into: str | None, max_columns: int, extra_prefix: str = ""
             ) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        header = [h.strip() for h in next(_decoded(reader))]
    except StopIteration:
        raise Invalid("The CSV file is empty.", details={"columns": {}}) from None
    _check_header(header, set(required), set(known), extra_into, max_columns, extra_prefix)
    known = set(known)
    width = len(header)
    if extra_into is None:  # every column is known: the fast path (parsers strip their values)
        for number, cells in enumerate(_decoded(reader), start=1):
            record = {h: c for h, c in zip(header, cells) if c and not c.isspace()}
            if not record:
                continue
            if len(cells) != width:
                record["__width__"] = len(cells)
            yield number, record
        return
    for number, cells in enumerate(_decoded(reader), start=1):
        if not any(c.strip() for c in cells):
            continue
        record: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for name, cell in zip(header, cells):
            if cell.strip() == "":
                continue
            if name in known:
                record[name] = cell.strip()
            else:
                extra[name[len(extra_prefix):]] = cell.strip()
        if len(cells) != len(header):
            record["__width__"] = len(cells)
        if extra_into and extra:
            record[extra_into] = extra
        yield number, record


def _decoded(reader: Iterator[list[str]]) -> Iterator[list[str]]:
    try:
        yield from reader
    except UnicodeDecodeError:
        raise Invalid("The CSV file is not UTF-8.") from None
    except csv.Error as exc:
        if "field limit" in str(exc):
            limit = csv.field_size_limit()
            raise Invalid(f"A CSV field is longer than the field limit ({limit} characters).",
                           details={"limit_field_chars": limit}) from None
        raise Invalid(f"The CSV file is malformed: {exc}.") from None


def _check_header(header: list[str], required: set[str], known: set[str], extra_into: str | None,
                  max_columns: int, extra_prefix: str = "") -> None:
    if len(header) > max_columns:
        raise Invalid(f"The CSV header has {len(header)} columns; PILOT_MAX_CSV_COLUMNS allows {max_columns}.",
                       details={"limit_columns": max_columns, "header_columns": len(header)})
    counts = Counter(header)  # one pass: header.count() per column was quadratic
    missing = sorted(required - counts.keys())
    unknown = sorted(h for h in counts.keys() - known if not extra_into or not h.startswith(extra_prefix)
                     or bool(extra_prefix) and h == extra_prefix)
    dupes = sorted(h for h, n in counts.items() if n > 1)
    if missing or unknown or dupes:
        parts = [f"missing column(s) {', '.join(missing)}" if missing else "",
                 f"unknown column(s) {', '.join(unknown)}" if unknown else "",
                 f"repeated column(s) {', '.join(dupes)}" if dupes else ""]
        raise Invalid("CSV header: " + "; ".join(p for p in parts if p) + ".",
                       details={"columns": {"missing": missing, "unknown": unknown, "repeated": dupes}})


class RowErrors:
    """Collects rejected rows; raises one 422 listing them all."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.count = 0

    def add(self, row: int, field: str, message: str) -> None:
        self.count += 1
        if len(self.rows) < MAX_REPORTED:
            self.rows.append({"row": row, "field": field, "message": message})

    def add_validation(self, row: int, messages: dict) -> None:
        for field, msgs in _flatten(messages):
            self.add(row, field, "; ".join(msgs))

    def raise_if_any(self, total: int, extra: dict[str, Any] | None = None) -> None:
        if self.count:
            raise Invalid(f"{self.count} row error(s) in {total} row(s); nothing was stored.",
                           details={"rows": self.rows, "rejected_rows": len({r['row'] for r in self.rows}),
                                    "errors": self.count, "truncated": self.count > len(self.rows), **(extra or {})})


def _flatten(messages: Any, prefix: str = "") -> Iterator[tuple[str, list[str]]]:
    if isinstance(messages, dict):
        for key, value in messages.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            yield from _flatten(value, name)
    else:
        yield prefix or "_row", [str(m) for m in (messages if isinstance(messages, list) else [messages])]


def validate_rows(rows: Iterable[tuple[int, Any]], schema: ma.Schema, key: str,
                  errors: RowErrors) -> Iterator[tuple[int, dict[str, Any]]]:
    """Load each row with the schema; report bad rows and keys repeated within the batch."""
    seen: dict[Any, int] = {}
    for number, raw in rows:
        if not isinstance(raw, dict):
            errors.add(number, "_row", "Not an object.")
            continue
        if "__width__" in raw:
            errors.add(number, "_row", f"Has {raw.pop('__width__')} cells; the header has a different number.")
            continue
        try:
            data = schema.load(raw)
        except ma.ValidationError as exc:
            errors.add_validation(number, exc.messages)
            continue
        first = seen.setdefault(data[key], number)
        if first != number:
            errors.add(number, key, f"Duplicate {key} {data[key]!r}; first seen in row {first}.")
            continue
        yield number, data
