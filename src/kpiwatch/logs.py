"""Logging set-up: one pipeline for kpiwatch's structlog events and every library's records.

structlog events and the stdlib records of urllib3, requests, APScheduler, uvicorn,
SQLAlchemy, slack_sdk, alembic (anything reaching the root logger) are rendered by
the same :class:`structlog.stdlib.ProcessorFormatter` on one root handler: a console
renderer on a TTY, JSON lines otherwise. Its last step before rendering redacts every
text field, exception text included, so a library that prints a URL with ``?token=``
cannot bypass :func:`kpiwatch.errors.redact`. Python warnings and uncaught exceptions
are routed into the same pipeline.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Mapping, MutableMapping
from types import TracebackType
from typing import Any, Literal

import structlog

from kpiwatch.errors import redact

# libraries are heard from WARNING up whatever KPIWATCH_LOG_LEVEL says: their INFO and
# DEBUG lines (every request urllib3 makes, every SQL statement) would drown ours
_LIBRARY_FLOOR = logging.WARNING


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redacted(v) for v in value]
    return value


def _redact_strings(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    # the last step before rendering: a URL or token in any field, nested list or
    # formatted traceback is masked, whichever library logged it
    for key, value in event_dict.items():
        event_dict[key] = _redacted(value)
    return event_dict


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """kpiwatch's root handler; marked so a second configure replaces it."""


def configure_logging(fmt: Literal["console", "json"], level: str = "info") -> None:
    """Configure structlog and the stdlib root logger; calling it again replaces the set-up."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        # a library's record: its level, its logger's name and a timestamp, like ours
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            timestamper,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,  # the traceback becomes text, then redacted
            _redact_strings,
            renderer,
        ],
    )
    handler = _Handler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(numeric, _LIBRARY_FLOOR))
    # structlog's events pass the filtering wrapper first; the stdlib must let them through
    logging.getLogger("kpiwatch").setLevel(numeric)
    logging.getLogger("apscheduler").setLevel(max(numeric, _LIBRARY_FLOOR))
    logging.getLogger("apscheduler.scheduler").addFilter(_busy_outbox_tick)
    logging.getLogger("apscheduler.executors.default").addFilter(_kpi_run_skipped)
    logging.getLogger("apscheduler.scheduler").addFilter(_kpi_run_skipped)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        # with log_config=None uvicorn adds no handlers; make sure none print around us
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    logging.captureWarnings(True)  # warnings.warn (urllib3's, for one) as records
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_thread_uncaught


def _busy_outbox_tick(record: logging.LogRecord) -> bool:
    """Drop APScheduler's "skipped: maximum number of running instances" for the
    outbox job: it ticks every 0.25 s, and a pass still sending is doing that work."""
    message = record.getMessage()
    return not (message.startswith('Execution of job "outbox ') and "skipped" in message)


def _kpi_run_skipped(record: logging.LogRecord) -> bool:
    """Drop APScheduler's line for each KPI run it skipped or missed: the daemon counts
    them and says so once a minute (:mod:`kpiwatch.runtime.schedule_health`)."""
    message = record.getMessage()
    kpi_job = 'job "evaluate ' in message or 'job "catch up ' in message
    return not (kpi_job and ("skipped: maximum number" in message or "was missed by" in message))


def _log_uncaught(
    kind: type[BaseException], error: BaseException, trace: TracebackType | None
) -> None:
    # Python's default hook prints the traceback, locals' reprs and all, unredacted
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, trace)
        return
    logging.getLogger("kpiwatch").critical("uncaught exception", exc_info=(kind, error, trace))


def _log_thread_uncaught(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread else "?"
    if args.exc_value is None:
        logging.getLogger("kpiwatch").critical("uncaught %s in thread %s", args.exc_type, name)
        return
    logging.getLogger("kpiwatch").critical(
        "uncaught exception in thread %s", name,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )  # fmt: skip
