"""What a digest holds: the data the on-call and review emails are rendered from."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from kpiwatch.config.rules import Kpi
from kpiwatch.model import (
    Ack,
    Annotation,
    Event,
    KpiState,
    Observation,
    OutboxMessage,
    StatusChange,
)


@dataclass(frozen=True)
class DigestKpi:
    """One KPI as a digest shows it."""

    kpi: Kpi
    state: KpiState
    recent: tuple[Observation, ...]  # oldest first, for the chart (last 30)
    annotations: tuple[Annotation, ...]
    ack: Ack | None
    url: str


@dataclass(frozen=True)
class OncallDigest:
    """For on-call: what needs attention now and what happened since the last digest."""

    since: datetime | None  # the previous digest, None for the first
    until: datetime
    attention: tuple[DigestKpi, ...]  # red, then yellow, then unknown KPIs now
    transitions: tuple[StatusChange, ...]  # since `since`
    escalations: tuple[Event, ...]  # escalated / de_escalated since `since`
    source_problems: tuple[Event, ...]  # data_incident / data_recovered of sources since `since`
    dead: tuple[OutboxMessage, ...]  # notifications that could not be delivered
    url: str  # the status board

    @property
    def quiet(self) -> bool:
        return not (self.attention or self.transitions or self.escalations
                    or self.source_problems or self.dead)  # fmt: skip


@dataclass(frozen=True)
class ReviewDigest:
    """For one owner: the KPIs due for review."""

    owner: str
    due: tuple[DigestKpi, ...]
    until: datetime
    url: str
