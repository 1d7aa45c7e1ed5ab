"""The builtin ``push`` source: values arrive by API or ``kpiwatch push``.

Pushed values are written to the store by whoever receives them; fetching
only reads the latest one back, so a push KPI is evaluated like any other.
How old it may be is the KPI's ``max_age`` to judge, not this source's.
"""

from __future__ import annotations

import time
from datetime import datetime

from kpiwatch.config import rules
from kpiwatch.errors import BadValueError, SourceError
from kpiwatch.sources.base import FetchResult, Latest


class PushSource:
    """Reads the latest pushed observation of a KPI through ``latest(kpi_id)``."""

    name = "push"

    def __init__(self, latest: Latest) -> None:
        self._latest = latest

    def fetch(self, kpi: rules.Kpi, now: datetime) -> FetchResult:
        """The latest pushed value, or BadValueError when none has arrived yet."""
        return self.fetch_with(kpi, now, self._latest)

    def reads(self, kpi: rules.Kpi) -> frozenset[str]:
        return frozenset((kpi.id,))

    def fetch_with(self, kpi: rules.Kpi, now: datetime, latest: Latest) -> FetchResult:
        """:meth:`fetch` through ``latest`` (a batch's values, read at once)."""
        start = time.perf_counter()
        try:
            observation = latest(kpi.id)
        except Exception as exc:  # the store failing is this source failing
            raise SourceError(
                f"could not read the pushed value of {kpi.id!r}: {exc}",
                source=self.name,
                kpi=kpi.id,
            ) from exc
        if observation is None:
            raise BadValueError(f"no value pushed yet for {kpi.id!r}", source=self.name, kpi=kpi.id)
        return FetchResult((observation,), time.perf_counter() - start)

    def close(self) -> None:
        """Nothing to release."""
