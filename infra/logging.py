"""Structured logging: JSON lines on stdout (console rendering on a TTY).

Events are fixed snake_case names with data as fields (STYLE 8). Context of the
message being handled (message_id, type, tenant, worker, attempt) is bound with
structlog's contextvars by the runtime. The redaction processor runs on every
event before rendering, exceptions included, so personal data that slipped into
a field or an error text is masked (docs/rules.md "What is never allowed").
Libraries that log through the standard library (aio-pika, aiormq, asyncio...) go
through the same renderer and redaction (``library_log`` events), so every line is
one format.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, WrappedLogger

from infra.redaction import redact

_UNREDACTED = frozenset({"event", "level", "timestamp"})


def redact_event(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    """Mask personal data in every field except the event name, level and time."""
    return {
        key: value if key in _UNREDACTED else redact(value, key) for key, value in event.items()
    }


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Set up structlog once per process; ``fmt`` is auto, json or console."""
    out = stream or sys.stdout
    console = fmt == "console" or (fmt == "auto" and out.isatty())
    renderer: Any = structlog.processors.JSONRenderer()
    if console:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_event,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    _route_libraries(renderer, level, stream)


#: Libraries whose own (stdlib) logging is routed through the same pipeline; below
#: ``debug`` they speak only of warnings and errors.
LIBRARIES = ("aio_pika", "aiormq", "asyncio", "aiohttp", "asyncpg", "aiosqlite")
_CREDENTIALS = re.compile(r"(\w+://)[^/@\s:]+:[^/@\s]*@")


def _library_event(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    """A library's record as one of ours: a fixed event name, the logger, and its text as
    ``message`` (redacted like any field; URL credentials dropped)."""
    record = event.get("_record")
    text = _CREDENTIALS.sub(r"\1[redacted]@", str(event.pop("event", "")))
    event["event"] = "library_log"
    event["logger"] = record.name if record is not None else None
    event["message"] = text
    return event


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the given stream, or to whatever ``sys.stdout`` is at the time."""

    def __init__(self, stream: TextIO | None) -> None:
        super().__init__(stream or sys.stdout)
        self._follow = stream is None

    def emit(self, record: logging.LogRecord) -> None:
        if self._follow:
            self.stream = sys.stdout
        super().emit(record)


def _route_libraries(renderer: Any, level: str, stream: TextIO | None) -> None:
    """Library logs (aio-pika's connection errors...) rendered by structlog: JSON lines,
    redacted, never plain text on stderr. Replaces the handler an earlier call installed."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _library_event,
            structlog.processors.format_exc_info,
            redact_event,
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = _Handler(stream)
    handler.setFormatter(formatter)
    handler.set_name("privacyops")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "privacyops"]:
        root.removeHandler(old)
    root.addHandler(handler)
    numeric = logging.getLevelNamesMapping()[level.upper()]
    root.setLevel(numeric)
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
