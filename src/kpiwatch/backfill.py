"""Backfill: load a KPI's history from its source, idempotently.

Sources that can query a time range (Prometheus) are asked window by window;
the others give their whole series in one fetch, filtered to the range.
Observations are keyed by KPI and time, so running it twice stores each point once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

from kpiwatch.config.rules import Kpi
from kpiwatch.errors import SourceError
from kpiwatch.sources.base import FetchResult, Source
from kpiwatch.store.repository import Store

WINDOW = timedelta(days=7)  # one request per week of history for range-capable sources


@runtime_checkable
class RangeSource(Protocol):
    def fetch_range(self, kpi: Kpi, start: datetime, end: datetime) -> FetchResult: ...


@dataclass(frozen=True, slots=True)
class BackfillResult:
    points: int  # observations the source gave in the range
    new: int  # of which were not stored before


def windows(
    start: datetime, end: datetime, size: timedelta = WINDOW
) -> Iterator[tuple[datetime, datetime]]:
    """Consecutive [from, to] windows covering start..end."""
    cursor = start
    while cursor < end:
        upper = min(cursor + size, end)
        yield cursor, upper
        cursor = upper


def plan(source: Source, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """The requests a backfill makes: windows for range sources, one fetch otherwise."""
    if isinstance(source, RangeSource):
        return list(windows(start, end))
    return [(start, end)]


def backfill(
    source: Source,
    kpi: Kpi,
    store: Store,
    steps: list[tuple[datetime, datetime]],
    now: datetime,
    on_step: Callable[[int], None] = lambda _: None,
) -> BackfillResult:
    """Fetch each planned step and store what falls in it; raises SourceError."""
    points = new = 0
    for lower, upper in steps:
        if isinstance(source, RangeSource):
            result = source.fetch_range(kpi, lower, upper)
        else:
            result = source.fetch(kpi, now)
            if len(result.observations) == 1 and result.current.observed_at == now:
                raise SourceError(
                    f"query for {kpi.id!r} gives one current value, not a history: "
                    "return (timestamp, value) rows to backfill",
                    source=kpi.source,
                    kpi=kpi.id,
                )
        wanted = [o for o in result.observations if lower <= o.observed_at <= upper]
        points += len(wanted)
        new += store.add_observations(wanted)
        on_step(1)
    return BackfillResult(points, new)
