"""Structured logs (structlog): JSON lines in production, readable lines in development.

Log lines name the event and subscription they are about (``event_id``,
``subscription_id``) and never carry a secret, a key or a delivered body. They go to
standard error, as uvicorn's do, so what a command prints on standard output (the key
``tidings keys create`` makes, the table of ``tidings keys list``) stays readable by a
script whatever is logged meanwhile.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO, cast

import structlog

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(json_lines: bool, level: str = "info") -> None:
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json_lines else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(cast(TextIO, _CurrentStderr())),
        cache_logger_on_first_use=True,
    )


class _CurrentStderr:
    """Standard error as it is when a line is written, not when logging was configured:
    whoever swaps ``sys.stderr`` later (a test's capture, a daemon) gets the lines."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()
