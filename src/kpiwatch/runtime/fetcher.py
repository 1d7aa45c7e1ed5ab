"""Fetching for the runner: one KPI, or a batch of them per source pool, with the
backstop of a timeout, the KPI's plan rows, and the error a failure gives the KPI.

What a fetch gives (:class:`Fetched`) is all the evaluation needs to know of it:
the observations, or the error and whether it is the source's (SPEC §5a).
"""

from __future__ import annotations

import threading
import time as _time
import weakref
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime
from typing import NamedTuple
from zoneinfo import ZoneInfo

import structlog

from kpiwatch.clock import Clock
from kpiwatch.config.rules import Kpi
from kpiwatch.errors import SourceError, SourceTimeout, SourceUnavailable
from kpiwatch.evaluation.periods import period_start, plan_key
from kpiwatch.model import KpiState, Observation
from kpiwatch.runtime.fetching import PoolSlots, fetch_in_pool
from kpiwatch.runtime.workspace import Workspace
from kpiwatch.sources.base import FetchResult, Latest, Source, StoreBacked

log = structlog.get_logger("kpiwatch.runner")


class Fetched(NamedTuple):
    """What one fetch gave a KPI: observations, or the error it shows."""

    observations: tuple[Observation, ...]
    error: str | None = None
    source_wide: bool = False  # the error is the source's (cannot connect, timeout ...)
    via: str | None = None  # a formula's: the source of the blind input it is blind through
    plans: Mapping[str, float] | None = None  # the rows of the KPI's plan_query, by plan key


class Fetcher:
    """Fetches for one runner; thread-safe (the pools' slot counts are per pool)."""

    def __init__(
        self,
        clock: Clock,
        tz: ZoneInfo,
        fetch_grace: float,
        report: Callable[[str, float], None],  # (source, seconds) of every fetch
    ) -> None:
        self._clock = clock
        self._tz = tz
        self._fetch_grace = fetch_grace
        self._report = report
        self._guard = threading.Lock()
        # per fetch pool (a reload brings new ones): how many of its threads no run holds
        self._slots: weakref.WeakKeyDictionary[ThreadPoolExecutor, PoolSlots] = (
            weakref.WeakKeyDictionary()
        )

    def fetch(
        self,
        workspace: Workspace,
        kpi: Kpi,
        now: datetime,
        latest: Latest | None = None,
        *,
        batched: bool = False,
    ) -> Fetched:
        """Fetch one KPI now, in its source's pool, with its plan rows when it has a
        ``plan_query``; never raises (a failure is the KPI's error). ``latest``: the
        stored values a push or formula KPI reads, when its batch read them at once;
        ``batched``: part of a batch, whose failures are said per source (:func:`outcome`)."""
        source = workspace.sources.get(kpi.source)
        if source is None:  # the loader rejects this; a guard, not a path
            return Fetched((), f"source {kpi.source!r} is not configured")
        started = _time.perf_counter()
        try:
            one = self._fetch_timed(workspace, kpi, source, now, started, latest, batched)
            return self._with_plan(workspace, kpi, one, now)
        finally:
            if kpi.source in workspace.rules.sources:
                self._report(kpi.source, _time.perf_counter() - started)

    def _fetch_timed(
        self,
        workspace: Workspace,
        kpi: Kpi,
        source: Source,
        now: datetime,
        started: float,
        latest: Latest | None = None,
        batched: bool = False,
    ) -> Fetched:
        try:
            result: FetchResult | Exception
            if latest is not None and isinstance(source, StoreBacked):
                result = source.fetch_with(kpi, now, latest)
            else:
                result = self._call_source(workspace, kpi, source, now)
        except Exception as exc:
            result = exc
        return outcome(kpi, result, _time.perf_counter() - started, batched=batched)

    def fetch_many(
        self, workspace: Workspace, kpis: Sequence[Kpi]
    ) -> list[tuple[datetime, Fetched]]:
        """Fetch KPIs for a batch: each source's KPIs in one run in its pool.

        One hand-off per source and batch instead of one per KPI, with the same
        backstop per fetch (see :mod:`kpiwatch.runtime.fetching`).
        """
        fetched: dict[str, tuple[datetime, Fetched]] = {}
        by_source: dict[str, list[Kpi]] = defaultdict(list)
        for kpi in kpis:
            by_source[kpi.source].append(kpi)
        for name, group in by_source.items():
            pool = workspace.fetch_pools.get(name)
            config = workspace.rules.sources.get(name)
            source = workspace.sources.get(name)
            if pool is None or config is None or source is None:  # formula, push
                latest = _read_at_once(workspace, source, group)
                for kpi in group:
                    now = self._clock.now()
                    fetched[kpi.id] = (now, self.fetch(workspace, kpi, now, latest, batched=True))
                continue
            timeout = config.timeout.total_seconds()
            try:
                runs = fetch_in_pool(
                    pool, source, group, self._clock,
                    slots=self._slots_for(pool, config.max_concurrency),
                    limit=timeout + self._fetch_grace, timeout=timeout,
                )  # fmt: skip
            except Exception as exc:  # e.g. the pool shut down by a reload meanwhile
                now = self._clock.now()
                runs = [(now, exc, 0.0)] * len(group)
            for kpi, (now, result, seconds) in zip(group, runs, strict=True):
                self._report(name, seconds)
                one = outcome(kpi, result, seconds, batched=True)
                fetched[kpi.id] = (now, self._with_plan(workspace, kpi, one, now))
        return [fetched[kpi.id] for kpi in kpis]

    def _with_plan(
        self, workspace: Workspace, kpi: Kpi, fetched: Fetched, now: datetime
    ) -> Fetched:
        """A fetch with the KPI's ``plan_query`` rows, asked of the same source (SPEC §2a).

        Its rows are ``(period_start, target)``; without them the percent thresholds
        cannot judge, so a failing plan query is this KPI's data problem.
        """
        target = kpi.target
        if target is None or target.plan_query is None or kpi.period is None:
            return fetched
        if fetched.error is not None:
            return fetched
        source = workspace.sources.get(kpi.source)
        if source is None:
            return fetched
        asked = kpi.model_copy(update={"query": target.plan_query, "aggregate": None})
        try:
            rows = self._call_source(workspace, asked, source, now).observations
        except SourceError as exc:
            return fetched._replace(observations=(), error=f"plan_query failed: {exc.reason}")
        plans = {plan_key(period_start(row.observed_at, kpi.period, self._tz), kpi.period,
                          self._tz): row.value for row in rows}  # fmt: skip
        return fetched._replace(plans=plans)

    def _call_source(
        self, workspace: Workspace, kpi: Kpi, source: Source, now: datetime
    ) -> FetchResult:
        """Fetch in the source's own pool, waiting at most its timeout plus a grace.

        The source enforces its timeout itself; this is the backstop for one that
        hangs anyway (a driver stuck in a syscall): the evaluation worker is freed
        and the KPI shows unknown, while the stuck thread stays in that source's pool.
        """
        pool = workspace.fetch_pools.get(kpi.source)
        config = workspace.rules.sources.get(kpi.source)
        if pool is None or config is None:  # formula, push: in-process and quick
            return source.fetch(kpi, now)
        limit = config.timeout.total_seconds() + self._fetch_grace
        future = pool.submit(source.fetch, kpi, now)
        try:
            return future.result(timeout=limit)
        except FutureTimeout:
            future.cancel()
            raise SourceTimeout(
                f"no answer within {limit:g}s (timeout {config.timeout.total_seconds():g}s); "
                "the fetch is abandoned",
                source=kpi.source,
                kpi=kpi.id,
            ) from None

    def _slots_for(self, pool: ThreadPoolExecutor, threads: int) -> PoolSlots:
        """The threads of a source's fetch pool, as runs take them (one count per pool)."""
        with self._guard:
            slots = self._slots.get(pool)
            if slots is None:
                slots = self._slots[pool] = PoolSlots(threads)
            return slots


def _read_at_once(
    workspace: Workspace, source: Source | None, kpis: Sequence[Kpi]
) -> Latest | None:
    """The stored values a batch of push or formula KPIs reads, in one read of the store;
    None (each KPI reads its own, and says what failed) when that read fails."""
    if workspace.latest_of is None or not isinstance(source, StoreBacked):
        return None
    wanted = set().union(*(source.reads(kpi) for kpi in kpis))
    try:
        found = workspace.latest_of(wanted)
    except Exception as exc:
        log.warning("reading a batch's stored values failed; reading them one by one",
                    source=source.name, error=str(exc))  # fmt: skip
        return None
    return found.get


def outcome(
    kpi: Kpi, result: FetchResult | Exception, seconds: float, *, batched: bool = False
) -> Fetched:
    """A fetch's observations, or the error the KPI shows (logged here: at debug for a
    ``batched`` fetch, whose failures the runner says once per source and run)."""
    if isinstance(result, SourceError):
        (log.debug if batched else log.warning)(
            "fetch failed",
            kpi=kpi.id,
            source=kpi.source,
            error=str(result),
            seconds=round(seconds, 3),
        )
        return Fetched((), str(result), isinstance(result, SourceUnavailable))
    if isinstance(result, Exception):  # a source bug is a data problem for this KPI only
        log.error("fetch crashed", kpi=kpi.id, source=kpi.source, exc_info=result)
        return Fetched((), f"source {kpi.source!r} failed unexpectedly: {result!r}")
    return Fetched(result.observations)


def over_blind_inputs(
    workspace: Workspace, kpi: Kpi, fetched: Fetched, states: Mapping[str, KpiState]
) -> Fetched:
    """A formula over a blind input is blind itself: its value would be computed from
    data known to be missing or stale (SPEC §5a). The problem is its inputs' sources',
    not its owner's; the value computed from the old inputs is not kept."""
    inputs = workspace.rules.formula_inputs.get(kpi.id, ())
    blind = sorted(name for name in inputs if name in states and states[name].blind)
    if not blind or fetched.error is not None:
        return fetched
    problem = states[blind[0]].data_problem
    reason = problem.reason if problem is not None else "no usable value"
    more = f" (and {len(blind) - 1} more)" if len(blind) > 1 else ""
    via = problem.source if problem is not None else None
    return Fetched((), f"input {blind[0]!r}{more} has no fresh data: {reason}", True, via)
