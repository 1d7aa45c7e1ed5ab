"""A Notice: one outbox message with everything a channel needs to render it.

Built by the outbox from the store and the running rules just before sending,
so messages show the latest annotations and acks, not those of when the event
was recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

from kpiwatch.config.rules import Kpi, Team
from kpiwatch.model import Ack, Annotation, Event, KpiState, Observation, OutboxMessage


@dataclass(frozen=True)
class Notice:
    message: OutboxMessage  # the event, channel and target
    kpi: Kpi | None  # None for source events or a KPI removed from the rules
    team: Team | None
    state: KpiState | None  # the KPI's state now
    recent: tuple[Observation, ...]  # oldest first, for the sparkline / chart (last 30)
    annotations: tuple[Annotation, ...]  # newest last, recent ones only
    ack: Ack | None  # of the current episode
    url: str  # the KPI's page on the status board (or the board for source events)

    @property
    def event(self) -> Event:
        return self.message.event
