"""Fakes for users' tests and ours: a clock you set, a source you fill, a recording channel.

Prefer these to ``mock.Mock``: tests then assert on outcomes (what was
delivered, what was stored), not on calls.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

from kpiwatch.config.loader import load_rule_text
from kpiwatch.config.rules import Kpi
from kpiwatch.errors import DeliveryError, SourceError
from kpiwatch.model import Observation
from kpiwatch.notify.notice import Notice
from kpiwatch.notify.routing import Router
from kpiwatch.runtime.workspace import Workspace
from kpiwatch.sources.base import FetchResult, Source
from kpiwatch.sources.formula import FormulaSource
from kpiwatch.sources.push import PushSource


class FixedClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 5, 8, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> datetime:
        self._now += delta
        return self._now

    def set(self, moment: datetime) -> None:
        self._now = moment


class FakeSource:
    """A source whose next answer a test sets: a value, a series, or an error."""

    def __init__(self, name: str = "fake") -> None:
        self.name = name
        self._values: dict[str, float | list[tuple[datetime, float]] | SourceError] = {}
        self.fetches: list[str] = []

    def set(self, kpi_id: str, value: float | list[tuple[datetime, float]] | SourceError) -> None:
        self._values[kpi_id] = value

    def fetch(self, kpi: Kpi, now: datetime) -> FetchResult:
        self.fetches.append(kpi.id)
        value = self._values.get(
            kpi.id, SourceError("no value set in FakeSource", source=self.name)
        )
        if isinstance(value, SourceError):
            raise value
        if isinstance(value, list):
            points = tuple(Observation(kpi.id, at, v) for at, v in sorted(value))
        else:
            points = (Observation(kpi.id, now, float(value)),)
        return FetchResult(points, 0.0)

    def close(self) -> None:
        pass


class RecordingChannel:
    """A channel that keeps what it was given; ``fail`` makes the next sends raise."""

    def __init__(self, name: str = "log") -> None:
        self.name = name
        self.sent: list[Notice] = []
        self._fail: Callable[[Notice], DeliveryError | None] | None = None
        self._lock = threading.Lock()

    def fail_with(self, decide: Callable[[Notice], DeliveryError | None] | None) -> None:
        self._fail = decide

    def send(self, notice: Notice) -> None:
        error = self._fail(notice) if self._fail else None
        if error is not None:
            raise error
        with self._lock:
            self.sent.append(notice)


def fake_workspace(
    rules_yaml: str,
    latest: Callable[[str], Observation | None],
    sources: Mapping[str, Source],
    *,
    channels: frozenset[str] | None = None,
) -> Workspace:
    """A workspace over rules given as YAML text, reading the given (fake) sources.

    The built-in ``formula`` and ``push`` sources are added, reading ``latest``
    (normally ``store.latest``), so formulas and pushes work as in the daemon.
    """
    loaded = load_rule_text(rules_yaml, "rules.yaml")
    builtin: dict[str, Source] = {"formula": FormulaSource(latest), "push": PushSource(latest)}
    router = Router(loaded.rules) if channels is None else Router(loaded.rules, channels=channels)
    return Workspace(loaded, {**sources, **builtin}, router)
