"""Backtest orchestration: stream each KPI's history through one or two rule sets."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time
from zoneinfo import ZoneInfo

from kpiwatch.backtest.outcome import KpiOutcome, replay_kpi
from kpiwatch.config.rules import BUILTIN_SOURCES, RuleSet
from kpiwatch.errors import SourceError
from kpiwatch.model import Observation
from kpiwatch.notify.routing import Router
from kpiwatch.replay import ALL_CHANNELS
from kpiwatch.runtime.runner import merged_history
from kpiwatch.runtime.workspace import Workspace

History = Iterable[tuple[str, Sequence[Observation]]]


@dataclass(frozen=True)
class Replayed:
    """One KPI under the current rules (``a``) and, with ``--compare``, the other (``b``)."""

    a: KpiOutcome
    b: KpiOutcome | None


def backtest(
    rules: RuleSet,
    history: History,
    start: datetime | None,
    end: datetime,
    *,
    tz: ZoneInfo,
    review_time: time,
    oncall_emails: Sequence[str] = (),
    other: RuleSet | None = None,
) -> Iterator[Replayed]:
    """Replay each KPI of ``history`` from ``start`` (default: its first observation) to
    ``end``, under ``rules`` and, when given, ``other`` too (a KPI it lacks gets no ``b``).
    A KPI without observations, or no longer in ``rules``, yields nothing."""

    def replayed(kpi_id: str, under: RuleSet, router: Router) -> KpiOutcome | None:
        kpi = under.by_id.get(kpi_id)
        if kpi is None:
            return None
        return replay_kpi(kpi, observations, first, end, router, tz=tz, review_time=review_time)

    router = Router(rules, channels=ALL_CHANNELS, oncall_emails=oncall_emails)
    other_router = None if other is None else Router(other, channels=ALL_CHANNELS,
                                                     oncall_emails=oncall_emails)  # fmt: skip
    for kpi_id, observations in history:
        if not observations:
            continue
        first = observations[0].observed_at if start is None else start
        a = replayed(kpi_id, rules, router)
        if a is None:
            continue
        b = None if other is None or other_router is None else replayed(kpi_id, other, other_router)
        yield Replayed(a, b)


def fetched_history(
    workspace: Workspace, kpi_ids: Sequence[str], now: datetime
) -> tuple[dict[str, list[Observation]], list[str]]:
    """Each KPI's series read from its source now (read-only), and the problems met.

    Formula and push KPIs have no series to read: their stored values are replayed.
    """
    fetched: dict[str, list[Observation]] = {}
    problems: list[str] = []
    for kpi_id in kpi_ids:
        kpi = workspace.rules.by_id[kpi_id]
        if kpi.source in BUILTIN_SOURCES:
            continue
        try:
            fetched[kpi_id] = list(workspace.sources[kpi.source].fetch(kpi, now).observations)
        except SourceError as exc:
            problems.append(f"{kpi_id}: {exc}")
    return fetched, problems


def with_fetched(
    history: History, fetched: Mapping[str, Sequence[Observation]], end: datetime
) -> History:
    """The stored history with the fetched points up to ``end`` (a fetched point wins a tie)."""
    for kpi_id, stored in history:
        points = [o for o in fetched.get(kpi_id, ()) if o.observed_at <= end]
        yield kpi_id, merged_history(list(stored), points)
