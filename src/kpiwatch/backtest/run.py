"""Backtest orchestration: each KPI's history through one or two rule sets, in parts.

KPIs are independent, so the work is cut into parts of :data:`PART` KPIs. Each
part reads its history (:func:`kpiwatch.store.history.histories`), replays it
and renders its output; the parts run in ``jobs`` worker processes, forked
after the rules are loaded so that no worker loads or unpickles them, and come
back in order. Memory holds a part's history, not the year's.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time
from zoneinfo import ZoneInfo

from kpiwatch.backtest import report
from kpiwatch.backtest.outcome import KpiOutcome, Replayed, replay_kpi
from kpiwatch.config.rules import BUILTIN_SOURCES, RuleSet
from kpiwatch.errors import SourceError
from kpiwatch.evaluation import HISTORY_WINDOW, history_window
from kpiwatch.model import Observation
from kpiwatch.notify.routing import Router
from kpiwatch.replay import ALL_CHANNELS
from kpiwatch.runtime.runner import merged_history
from kpiwatch.runtime.workspace import Workspace

PART = 200  # KPIs a part reads and replays together
History = Iterable[tuple[str, Sequence[Observation]]]


@dataclass(frozen=True)
class Request:
    """Everything a part needs, fixed before the workers fork."""

    rules: RuleSet
    database_url: str | None  # None: no state database, only the fetched series
    start: datetime | None  # None: each KPI from its first observation
    end: datetime
    tz: ZoneInfo
    review_time: time
    oncall_emails: Sequence[str] = ()
    other: RuleSet | None = None  # --compare
    as_json: bool = False
    fetched: Mapping[str, Sequence[Observation]] = field(default_factory=dict)  # --fetch


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


@dataclass
class Part:
    """One part's rendered output (a text block or a JSON item per KPI) and its totals."""

    chunks: list[str]
    totals: report.Totals


def replay_part(request: Request, kpi_ids: Sequence[str]) -> Part:
    """Read, replay and render ``kpi_ids`` (a worker's task, or the whole run with one job)."""
    from kpiwatch.store.history import histories
    from kpiwatch.store.repository import Store

    # as far back as the longest window of these KPIs (periods compare with last year)
    longest = max((history_window(request.rules.by_id[k]) for k in kpi_ids
                   if k in request.rules.by_id), default=HISTORY_WINDOW)  # fmt: skip
    since = None if request.start is None else request.start - longest
    store = None
    history: History = [(kpi_id, []) for kpi_id in kpi_ids]
    if request.database_url is not None:
        store = Store.open(request.database_url, migrate=False)  # the parent migrated it
    try:
        if store is not None:
            history = histories(store, kpi_ids, since=since, until=request.end)
        if request.fetched:
            history = with_fetched(history, request.fetched, request.end)
        replays = backtest(
            request.rules, history, request.start, request.end, tz=request.tz,
            review_time=request.review_time, oncall_emails=request.oncall_emails,
            other=request.other,
        )  # fmt: skip
        part = Part([], report.Totals())
        for replayed in replays:
            part.totals.add(replayed)
            if request.other is not None and replayed.b is None:
                part.totals.missing.append(replayed.a.kpi.id)
            part.chunks.append(_rendered(request, replayed))
        return part
    finally:
        if store is not None:
            store.close()


def _rendered(request: Request, replayed: Replayed) -> str:
    if request.as_json:
        return report.item_json(replayed)
    if replayed.b is not None:
        return report.pair_text(replayed.a, replayed.b, request.tz) + "\n"
    if request.other is not None:
        return ""  # not in the compared rules: named at the end
    return report.outcome_text(replayed.a, request.tz) + "\n"


def replay_parts(request: Request, kpi_ids: Sequence[str], jobs: int) -> Iterator[Part]:
    """The parts of ``kpi_ids``, in order, replayed by ``jobs`` processes (in this one for 1,
    or where processes cannot be forked)."""
    parts = [list(kpi_ids[i : i + PART]) for i in range(0, len(kpi_ids), PART)]
    if jobs <= 1 or len(parts) <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        for kpi_ids in parts:
            yield replay_part(request, kpi_ids)
        return
    # forked workers inherit the request (rules included) through their initializer's
    # arguments, which fork does not pickle; only the KPI ids and the parts travel
    context = multiprocessing.get_context("fork")
    with context.Pool(min(jobs, len(parts)), initializer=_adopt, initargs=(request,)) as pool:
        yield from pool.imap(_worker_part, parts)


_WORKER_REQUEST: list[Request] = []  # a worker process's request, set once by _adopt


def _adopt(request: Request) -> None:
    _WORKER_REQUEST.append(request)


def _worker_part(kpi_ids: list[str]) -> Part:
    return replay_part(_WORKER_REQUEST[0], kpi_ids)


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
