"""structlog configuration: JSON lines on stderr, with request and key ids bound by callers."""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO, cast

import structlog
from structlog.typing import EventDict, WrappedLogger

from domain.key_format import redact_keys


class _CurrentStderr:
    """Whatever `sys.stderr` is when a line is written (test runners swap it for a while)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def redact_keys_in_fields(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """A structlog processor: keys in any text field (a path, an exception) become hints."""
    # Call sites redact what they know to be client-supplied; this catches what they missed.
    for name, value in event_dict.items():
        if type(value) is str and "k_" in value:
            event_dict[name] = redact_keys(value)
    return event_dict


def configure_logging(level: str | None = None, *, json: bool = True) -> None:
    """JSON logs for machines (default) or a readable console; level from ICODRIP_LOG_LEVEL."""
    level = level or os.environ.get("ICODRIP_LOG_LEVEL", "info")
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_keys_in_fields,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, _CurrentStderr())),
        cache_logger_on_first_use=True,
    )
