"""Build a Notice for an outbox message from the store and the running rules."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from kpiwatch.config.rules import RuleSet
from kpiwatch.model import OutboxMessage
from kpiwatch.notify.notice import Notice
from kpiwatch.store.repository import Store

RECENT_POINTS = 30  # sparkline / chart length
ANNOTATION_WINDOW = timedelta(days=30)


class NoticeBuilder:
    def __init__(self, store: Store, rules: Callable[[], RuleSet], base_url: str) -> None:
        self._store = store
        self._rules = rules
        self._base_url = base_url.rstrip("/")

    def build(self, message: OutboxMessage) -> Notice:
        event = message.event
        rules = self._rules()
        kpi = rules.by_id.get(event.kpi_id) if event.kpi_id else None
        if kpi is None:
            return Notice(message, None, None, None, (), (), None, f"{self._base_url}/")
        state = self._store.get_state(kpi.id)
        return Notice(
            message=message,
            kpi=kpi,
            team=rules.teams.get(kpi.team or ""),
            state=state,
            recent=tuple(self._store.history(kpi.id, limit=RECENT_POINTS)),
            annotations=tuple(
                self._store.annotations(kpi.id, since=event.at - ANNOTATION_WINDOW, limit=5)
            ),
            ack=self._store.ack_for(kpi.id, state.since) if state else None,
            url=f"{self._base_url}/kpis/{kpi.id}",
        )
