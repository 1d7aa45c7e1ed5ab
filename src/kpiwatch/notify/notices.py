"""Build a Notice for an outbox message from the store and the running rules."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta

from kpiwatch.config.rules import RuleSet
from kpiwatch.model import OutboxMessage
from kpiwatch.notify.notice import Notice
from kpiwatch.store.outbox_store import NoticeContext
from kpiwatch.store.repository import Store

RECENT_POINTS = 30  # sparkline / chart length
ANNOTATION_WINDOW = timedelta(days=30)
RECENT_ANNOTATIONS = 5


def kpi_url(base_url: str, kpi_id: str) -> str:
    """The KPI's page on the status board: the link every notification carries."""
    return f"{base_url.rstrip('/')}/kpis/{kpi_id}"


class NoticeBuilder:
    def __init__(self, store: Store, rules: Callable[[], RuleSet], base_url: str) -> None:
        self._store = store
        self._rules = rules
        self._base_url = base_url.rstrip("/")

    def build(self, message: OutboxMessage) -> Notice:
        return self.build_many([message])[0]

    def build_many(self, messages: Sequence[OutboxMessage]) -> list[Notice]:
        """Notices for ``messages``, in order, with one bulk read of the store for all."""
        rules = self._rules()
        kpis = [rules.by_id.get(m.event.kpi_id) if m.event.kpi_id else None for m in messages]
        known = [m for m, kpi in zip(messages, kpis, strict=True) if kpi is not None]
        context: dict[str, NoticeContext] = {}
        if known:
            context = self._store.notice_context(
                {m.event.kpi_id for m in known if m.event.kpi_id},
                points=RECENT_POINTS,
                annotations_since=min(m.event.at for m in known) - ANNOTATION_WINDOW,
            )
        notices = []
        for message, kpi in zip(messages, kpis, strict=True):
            if kpi is None:
                notices.append(
                    Notice(message, None, None, None, (), (), None, f"{self._base_url}/")
                )
                continue
            found = context[kpi.id]
            since = message.event.at - ANNOTATION_WINDOW
            annotations = [a for a in found.annotations if a.at >= since]
            notices.append(
                Notice(
                    message=message,
                    kpi=kpi,
                    team=rules.teams.get(kpi.team or ""),
                    state=found.state,
                    recent=found.recent,
                    annotations=tuple(annotations[-RECENT_ANNOTATIONS:]),
                    ack=found.ack,
                    url=kpi_url(self._base_url, kpi.id),
                )
            )
        return notices
