"""Log lines that cannot be forged: control characters in what is logged are escaped.

A request path or a field value may carry a newline (`%0A`) followed by text shaped like a log
line; written as is, that text would stand in the log as a line of its own. Every handler of the
app and of gunicorn formats through `SafeFormatter`, which writes such characters as `\\n`,
`\\x1b`, …: one record is one line, plus the frames of a traceback (and of its causes), whose
exception texts are escaped the same way.
"""
from __future__ import annotations

import logging
import re
import sys
import traceback
from types import TracebackType

from gunicorn.glogging import Logger as GunicornBaseLogger

# C0 and C1 controls and the Unicode line and paragraph separators (all line boundaries to
# str.splitlines and to some log viewers), and the bidirectional overrides, which can make a
# terminal show a line's text in another order than it was written.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"
_ON_ROOT = "_pilot_root"


def escape(text: str) -> str:
    """The text with every control character written as an escape (`\\n`, `\\t`, `\\x00`, …)."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class SafeFormatter(logging.Formatter):
    """A Formatter whose message and exception text are escaped (see the module's docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        record.exc_text = None  # a plain formatter of another handler may have cached unescaped text
        return super().format(record)

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape(super().formatMessage(record))

    def formatException(self, ei: tuple[type[BaseException], BaseException, TracebackType | None]) -> str:
        return _traceback(traceback.TracebackException(*ei)).rstrip("\n")


def _traceback(exc: traceback.TracebackException) -> str:
    """The traceback as Python writes it, causes first, each exception's own text escaped (frames
    are the program's code, the texts may carry anything)."""
    parts: list[str] = []
    while exc is not None:
        frames = ["Traceback (most recent call last):\n", *exc.stack.format()] if exc.stack else []
        parts[:0] = [*frames, escape("".join(exc.format_exception_only()).rstrip("\n")) + "\n"]
        if exc.__cause__ is not None:
            exc, link = exc.__cause__, _CAUSE
        elif exc.__context__ is not None and not exc.__suppress_context__:
            exc, link = exc.__context__, _CONTEXT
        else:
            exc, link = None, ""
        parts[:0] = [link]
    return "".join(parts)


def safe(formatter: logging.Formatter) -> SafeFormatter:
    """A SafeFormatter set up as `formatter` is (format, style, date format, converter)."""
    copy = SafeFormatter()
    copy.__dict__.update(vars(formatter))
    return copy


def install(logger: logging.Logger) -> None:
    """Make every handler of `logger` format safely."""
    for handler in logger.handlers:
        if not isinstance(handler.formatter, SafeFormatter):
            handler.setFormatter(safe(handler.formatter or logging.Formatter()))


def install_root(level: int | None = None) -> None:
    """Make the root logger's handlers (where the app's loggers end) format safely; without any,
    add one writing to stderr as gunicorn writes its error log. With `level`, log from that level."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(SafeFormatter(GunicornBaseLogger.error_fmt, GunicornBaseLogger.datefmt))
        root.addHandler(handler)
    install(root)
    if level is not None:
        root.setLevel(level)


class GunicornLogger(GunicornBaseLogger):
    """gunicorn's logger with its error and access logs escaped; the app's own loggers (which
    propagate to the root logger) write through the same error handlers unless a logging
    configuration gave the root logger handlers of its own."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            install(log)
        root = logging.getLogger()
        for handler in [h for h in root.handlers if getattr(h, _ON_ROOT, False)]:
            root.removeHandler(handler)  # a configuration reload replaced gunicorn's handlers
        if not root.handlers:
            for handler in self.error_log.handlers:
                setattr(handler, _ON_ROOT, True)
                root.addHandler(handler)
        install(root)
