"""Structured logging: JSON lines on stdout (console rendering on a TTY).

Events are fixed snake_case names with data as fields (STYLE 8). Context of the
message being handled (message_id, type, tenant, worker, attempt) is bound with
structlog's contextvars by the runtime. The redaction processor runs on every
event before rendering, exceptions included, so personal data that slipped into
a field or an error text is masked (docs/rules.md "What is never allowed").
"""

from __future__ import annotations

import logging
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


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
