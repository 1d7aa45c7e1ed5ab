"""The log channel: notifications become structured log lines.

Used when neither Slack nor SMTP is configured, so nothing is lost on a
fresh install: the operator sees every notification in the daemon's log.
"""

from __future__ import annotations

import structlog

from kpiwatch.notify.notice import Notice
from kpiwatch.notify.text import headline


class LogChannel:
    name = "log"

    def __init__(self) -> None:
        self._log = structlog.get_logger("kpiwatch.notification")

    def send(self, notice: Notice) -> None:
        event = notice.event
        self._log.warning(
            headline(event, notice.kpi),
            notification=event.kind.value,
            kpi=event.kpi_id,
            source=event.source,
            to=notice.message.target or None,
            reasons=list(event.data.get("reasons", [])) or None,
            ack=f"{notice.ack.author}: {notice.ack.comment}" if notice.ack else None,
            annotations=[a.text for a in notice.annotations[-3:]] or None,
            url=notice.url,
            event_key=event.key,
        )
