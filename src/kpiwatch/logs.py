"""structlog set-up: console renderer on a TTY, JSON lines otherwise; secrets redacted."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Literal

import structlog

from kpiwatch.errors import redact


def _redact_strings(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    # last line of defence: a URL or token that slipped into a log field is masked
    for key, value in event_dict.items():
        if isinstance(value, str):
            event_dict[key] = redact(value)
    return event_dict


def configure_logging(fmt: Literal["console", "json"], level: str = "info") -> None:
    """Configure structlog (and the stdlib loggers of libraries) once per process."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact_strings,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(
        level=max(numeric, logging.WARNING),
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("apscheduler.scheduler").addFilter(_busy_outbox_tick)


def _busy_outbox_tick(record: logging.LogRecord) -> bool:
    """Drop APScheduler's "skipped: maximum number of running instances" for the
    outbox job: it ticks every 0.25 s, and a pass still sending is doing that work."""
    message = record.getMessage()
    return not (message.startswith('Execution of job "outbox ') and "skipped" in message)
