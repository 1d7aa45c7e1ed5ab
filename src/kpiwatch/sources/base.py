"""The Source protocol: given a KPI, return its observations or raise SourceError."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from kpiwatch.config.rules import Kpi
from kpiwatch.model import Observation

# The latest stored observation of a KPI id, or None: how the builtin sources
# (formula, push) read values that the runtime keeps in its store.
Latest = Callable[[str], Observation | None]


@dataclass(frozen=True, slots=True)
class FetchResult:
    """What a source gave for one KPI: oldest first, the last is the current value."""

    observations: tuple[Observation, ...]
    duration: float  # seconds the query took

    @property
    def current(self) -> Observation:
        return self.observations[-1]


class Source(Protocol):
    """A place KPI values live. Implementations are safe to call from several threads."""

    name: str

    def fetch(self, kpi: Kpi, now: datetime) -> FetchResult:
        """Ask for the KPI's value(s). Raise SourceError (never anything else) on failure."""
        ...

    def close(self) -> None:
        """Release connections and pools."""
        ...


def held(source: Source) -> AbstractContextManager[None]:
    """A block in which the source's fetches from this thread may share what they need
    (a SQL source keeps one pooled connection); nothing for a source without ``held``."""
    keep: Callable[[], AbstractContextManager[None]] | None = getattr(source, "held", None)
    return nullcontext() if keep is None else keep()


def is_finite_number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def observations_of(
    kpi_id: str, points: Sequence[tuple[datetime, float]]
) -> tuple[Observation, ...]:
    """Sorted, one per timestamp (the last given wins)."""
    unique = dict(points)
    return tuple(Observation(kpi_id, at, value) for at, value in sorted(unique.items()))


@runtime_checkable
class StoreBacked(Protocol):
    """A builtin source reading values kpiwatch keeps (formula, push): a batch of its
    KPIs is fetched from one read of the store, not one read per KPI (issue 15)."""

    def reads(self, kpi: Kpi) -> frozenset[str]:
        """The KPI ids whose latest values fetching ``kpi`` reads."""
        ...

    def fetch_with(self, kpi: Kpi, now: datetime, latest: Latest) -> FetchResult:
        """:meth:`Source.fetch`, reading the latest values through ``latest``."""
        ...

