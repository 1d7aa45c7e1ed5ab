"""Fetching several KPIs of one source in its pool: one hand-off per run, not per KPI.

``Runner.evaluate_all`` fetches a batch's KPIs of a source one after another in
one thread of that source's pool (which bounds the source's concurrency),
instead of handing every fetch to the pool and waiting for it. The waiting
worker keeps the backstop a fetch of its own would have: a fetch still running
after ``limit`` seconds is abandoned (its KPI gets a :class:`SourceTimeout`),
the stuck thread stays in the pool, and the rest of the run goes to a new one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime

from kpiwatch.clock import Clock
from kpiwatch.config.rules import Kpi
from kpiwatch.errors import SourceTimeout
from kpiwatch.sources.base import FetchResult, Source, held

# (the time the fetch used as "now", its result or what it raised, seconds it took)
Fetched = tuple[datetime, FetchResult | Exception, float]


class PoolSlots:
    """The threads of one source's fetch pool, as runs take them; which are stuck.

    A run takes a thread for as long as it has KPIs to fetch. Waiting for one is
    not counted against anyone's fetch while some run still makes progress
    (each of its fetches is watched); only when every thread is held by an
    abandoned, stuck fetch does waiting give up, after ``limit``.
    """

    def __init__(self, threads: int) -> None:
        self._threads = threads
        self._free = threads
        self._stuck = 0
        self._changed = threading.Condition()

    def acquire(self, limit: float) -> bool:
        """Take a thread; False when all were stuck for ``limit`` seconds."""
        with self._changed:
            deadline: float | None = None
            while self._free == 0:
                if self._stuck < self._threads:
                    deadline = None  # a live run frees its thread, or is found stuck
                    self._changed.wait(1.0)
                    continue
                now = time.perf_counter()
                deadline = now + limit if deadline is None else deadline
                if now >= deadline:
                    return False
                self._changed.wait(deadline - now)
            self._free -= 1
            return True

    def stuck(self) -> None:
        """A taken thread's fetch was abandoned: it stays taken until it returns."""
        with self._changed:
            self._stuck += 1
            self._changed.notify_all()

    def release(self, *, was_stuck: bool = False) -> None:
        with self._changed:
            self._free += 1
            self._stuck -= was_stuck
            self._changed.notify_all()


class _Run:
    """The fetches of one run, done in a pool thread, watched from another.

    ``current`` (the time used as now and the start of the fetch on) moves to the
    next fetch in the same step that records a result, so a watcher never sees
    a finished fetch as running; it is None before the run starts and at its end.
    """

    def __init__(self, source: Source, kpis: Sequence[Kpi], clock: Clock, slots: PoolSlots) -> None:
        self._slots = slots  # its thread is given back when done, even long after abandoned
        self._source = source
        self._kpis = kpis
        self._clock = clock
        self._lock = threading.Lock()
        self._results: list[Fetched] = []
        self._current: tuple[datetime, float] | None = None
        self._abandoned = False
        self._stuck = False  # abandoned in the middle of a fetch: counted as stuck

    def __call__(self) -> None:
        try:
            with held(self._source):  # one pooled connection for the whole run
                self._fetch_all()
        finally:
            with self._lock:
                stuck = self._stuck
            self._slots.release(was_stuck=stuck)

    def _fetch_all(self) -> None:
        with self._lock:
            if self._abandoned:
                return
            self._current = current = (self._clock.now(), time.perf_counter())
        for index, kpi in enumerate(self._kpis):
            now, started = current
            outcome: FetchResult | Exception
            try:
                outcome = self._source.fetch(kpi, now)
            except Exception as exc:  # the caller logs it with the KPI
                outcome = exc
            with self._lock:
                if self._abandoned:  # too late: this KPI already counts as timed out
                    return
                self._results.append((now, outcome, time.perf_counter() - started))
                if index + 1 == len(self._kpis):
                    self._current = None
                    return
                self._current = current = (self._clock.now(), time.perf_counter())

    def progress(self) -> tuple[int, tuple[datetime, float] | None]:
        """How many fetches are done, and the one running (None: not begun, or done)."""
        with self._lock:
            return len(self._results), self._current

    def results(self) -> list[Fetched]:
        with self._lock:
            return list(self._results)

    def abandon(self, seen: tuple[int, tuple[datetime, float] | None]) -> list[Fetched] | None:
        """Give up on the run at the progress ``seen`` if it has not moved since;
        the results before it. None when it has moved on meanwhile."""
        with self._lock:
            if (len(self._results), self._current) != seen:
                return None
            self._abandoned = True
            if self._current is not None:
                self._stuck = True
                self._slots.stuck()
            return list(self._results)


def fetch_in_pool(
    pool: ThreadPoolExecutor,
    source: Source,
    kpis: Sequence[Kpi],
    clock: Clock,
    *,
    slots: PoolSlots,
    limit: float,
    timeout: float,
) -> list[Fetched]:
    """Fetch ``kpis`` (all of ``source``) in order in ``pool``; one result per KPI.

    ``slots`` are the pool's threads (shared by every caller of the pool): a run
    starts only when one is free, so it never queues behind other runs. Never
    waits more than ``limit`` seconds for one fetch, counted from when it began;
    nor for a thread once every one is stuck; ``timeout`` is the source's own,
    for the message.
    """
    results: list[Fetched] = []

    def timed_out(kpi: Kpi, now: datetime) -> Fetched:
        message = f"no answer within {limit:g}s (timeout {timeout:g}s); the fetch is abandoned"
        return now, SourceTimeout(message, source=source.name, kpi=kpi.id), limit

    while len(results) < len(kpis):
        todo = kpis[len(results) :]
        if not slots.acquire(limit):
            results.append(timed_out(todo[0], clock.now()))
            continue
        run = _Run(source, todo, clock, slots)
        queued = (clock.now(), time.perf_counter())  # the pool may still be busy otherwise
        try:
            future = pool.submit(run)
        except BaseException:
            slots.release()
            raise
        while True:
            seen = run.progress()
            done, current = seen
            if current is None and done == len(todo):  # finished: its future follows
                future.result()
                results.extend(run.results())
                break
            watched = current or queued
            try:
                future.result(timeout=max(watched[1] + limit - time.perf_counter(), 0))
            except FutureTimeout:
                gave_up = run.abandon(seen)
                if gave_up is None:
                    continue  # the run moved on: watch its next fetch
                if future.cancel():  # still queued: it never starts, so never frees its slot
                    slots.release()
                results.extend(gave_up)
                results.append(timed_out(todo[len(gave_up)], watched[0]))
                break
            else:
                results.extend(run.results())
                break
    return results
