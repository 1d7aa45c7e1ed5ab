"""The log channel: notifications become structured log lines.

Used when neither Slack nor SMTP is configured, so nothing is lost on a
fresh install: the operator sees every notification in the daemon's log.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from kpiwatch.config.rules import Kpi
from kpiwatch.model import OutboxMessage
from kpiwatch.notify.text import headline


class LogChannel:
    name = "log"

    def __init__(self, kpi_lookup: Callable[[str], Kpi | None]) -> None:
        self._kpi = kpi_lookup
        self._log = structlog.get_logger("kpiwatch.notification")

    def send(self, message: OutboxMessage) -> None:
        event = message.event
        kpi = self._kpi(event.kpi_id) if event.kpi_id else None
        self._log.warning(
            headline(event, kpi),
            notification=event.kind.value,
            kpi=event.kpi_id,
            source=event.source,
            to=message.target or None,
            reasons=list(event.data.get("reasons", [])) or None,
            event_key=event.key,
        )
