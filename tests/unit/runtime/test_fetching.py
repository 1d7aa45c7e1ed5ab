"""Runs of fetches in a source's pool: order, errors, and the backstop per fetch."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest

from kpiwatch.config import rules
from kpiwatch.errors import SourceError, SourceTimeout
from kpiwatch.runtime.fetching import PoolSlots, fetch_in_pool
from kpiwatch.sources.base import FetchResult
from kpiwatch.testing import FakeSource, FixedClock

NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def _kpi(kpi_id: str) -> rules.Kpi:
    return rules.Kpi(id=kpi_id, name=kpi_id, owner="o@example.com",
                     direction="lower_is_better", source="wh", query="SELECT 1")  # fmt: skip


class Source(FakeSource):
    """Hangs on the KPIs in ``hang`` until released; sleeps ``pause`` on every fetch."""

    def __init__(self, hang: frozenset[str] = frozenset(), pause: float = 0.0) -> None:
        super().__init__("wh")
        self.hang, self.pause = hang, pause
        self.release = threading.Event()
        self.fetched: list[tuple[str, datetime]] = []

    def fetch(self, kpi: rules.Kpi, now: datetime) -> FetchResult:
        self.fetched.append((kpi.id, now))
        if kpi.id in self.hang:
            self.release.wait(10)
        time.sleep(self.pause)
        return super().fetch(kpi, now)


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(2)
    yield executor
    executor.shutdown(wait=False, cancel_futures=True)


def test_results_come_in_order_with_errors_in_place(pool: ThreadPoolExecutor) -> None:
    source, clock = Source(), FixedClock(NOW)
    source.set("a", 1.0)
    source.set("b", SourceError("refused", source="wh"))
    source.set("c", 3.0)
    kpis = [_kpi("a"), _kpi("b"), _kpi("c")]

    results = fetch_in_pool(pool, source, kpis, clock, slots=PoolSlots(2), limit=5, timeout=3)

    assert [now for now, _, _ in results] == [NOW] * 3
    first, second, third = (outcome for _, outcome, _ in results)
    assert isinstance(first, FetchResult)
    assert first.current.value == 1.0
    assert isinstance(second, SourceError)
    assert isinstance(third, FetchResult)
    assert third.current.value == 3.0
    assert [kpi_id for kpi_id, _ in source.fetched] == ["a", "b", "c"]


def test_a_hung_fetch_is_abandoned_and_the_rest_fetched_in_a_new_run(
    pool: ThreadPoolExecutor,
) -> None:
    source, clock, slots = Source(hang=frozenset({"b"})), FixedClock(NOW), PoolSlots(2)
    for kpi_id in "abc":
        source.set(kpi_id, 1.0)
    try:
        started = time.monotonic()
        results = fetch_in_pool(pool, source, [_kpi(k) for k in "abc"], clock, slots=slots,
                                limit=0.3, timeout=0.1)  # fmt: skip
        assert time.monotonic() - started < 3
        outcomes = [outcome for _, outcome, _ in results]
        assert isinstance(outcomes[0], FetchResult)
        assert isinstance(outcomes[1], SourceTimeout)
        assert str(outcomes[1]) == (
            "source 'wh': no answer within 0.3s (timeout 0.1s); the fetch is abandoned"
        )
        assert outcomes[1].kpi == "b"
        assert isinstance(outcomes[2], FetchResult)  # by the pool's other thread
    finally:
        source.release.set()
    # the stuck thread gives its thread back once its fetch returns: both are free again
    assert slots.acquire(0.5)
    assert slots.acquire(0.5)
    assert [kpi_id for kpi_id, _ in source.fetched] == ["a", "b", "c"]  # b was not fetched twice


def test_waiting_for_a_busy_but_live_pool_is_no_timeout(pool: ThreadPoolExecutor) -> None:
    # two callers, one thread between them: each run takes longer than the limit in all,
    # but no single fetch does
    source, clock, slots = Source(pause=0.1), FixedClock(NOW), PoolSlots(1)
    for kpi_id in "abcdefgh":
        source.set(kpi_id, 1.0)
    groups = [[_kpi(k) for k in "abcd"], [_kpi(k) for k in "efgh"]]
    with ThreadPoolExecutor(2) as callers:
        runs = list(callers.map(
            lambda group: fetch_in_pool(pool, source, group, clock, slots=slots,
                                        limit=0.3, timeout=0.2), groups))  # fmt: skip
    outcomes = [outcome for results in runs for _, outcome, _ in results]
    assert all(isinstance(outcome, FetchResult) for outcome in outcomes)
    assert len(outcomes) == 8


def test_when_every_thread_is_stuck_each_fetch_gives_up_after_the_limit(
    pool: ThreadPoolExecutor,
) -> None:
    source, clock, slots = Source(hang=frozenset({"x", "y"})), FixedClock(NOW), PoolSlots(2)
    for kpi_id in "xyab":
        source.set(kpi_id, 1.0)
    try:
        stuck = fetch_in_pool(pool, source, [_kpi("x"), _kpi("y")], clock, slots=slots,
                              limit=0.2, timeout=0.1)  # fmt: skip
        assert all(isinstance(outcome, SourceTimeout) for _, outcome, _ in stuck)
        started = time.monotonic()
        results = fetch_in_pool(pool, source, [_kpi("a"), _kpi("b")], clock, slots=slots,
                                limit=0.2, timeout=0.1)  # fmt: skip
        assert time.monotonic() - started < 2
        assert [outcome.kpi for _, outcome, _ in results] == ["a", "b"]  # type: ignore[union-attr]
        assert all(isinstance(outcome, SourceTimeout) for _, outcome, _ in results)
    finally:
        source.release.set()
    # once the stuck fetches return, the pool serves again
    source.hang = frozenset()
    results = fetch_in_pool(pool, source, [_kpi("a")], clock, slots=slots, limit=5, timeout=3)
    assert isinstance(results[0][1], FetchResult)


class HoldingSource(Source):
    """Records its ``held`` blocks (per thread) and which block each fetch ran in."""

    def __init__(self, hang: frozenset[str] = frozenset()) -> None:
        super().__init__(hang)
        self.blocks: list[str] = []  # "open 1", "close 1", ...
        self.in_block: dict[str, int | None] = {}
        self._local = threading.local()

    @contextmanager
    def held(self) -> Iterator[None]:
        number = self._local.block = sum(b.startswith("open") for b in self.blocks) + 1
        self.blocks.append(f"open {number}")
        try:
            yield
        finally:
            self._local.block = None
            self.blocks.append(f"close {number}")

    def fetch(self, kpi: rules.Kpi, now: datetime) -> FetchResult:
        self.in_block[kpi.id] = getattr(self._local, "block", None)
        return super().fetch(kpi, now)


def test_a_run_fetches_its_kpis_inside_one_held_block_of_the_source(
    pool: ThreadPoolExecutor,
) -> None:
    source, clock = HoldingSource(), FixedClock(NOW)
    for kpi_id in "abc":
        source.set(kpi_id, 1.0)

    fetch_in_pool(pool, source, [_kpi(k) for k in "abc"], clock, slots=PoolSlots(2),
                  limit=5, timeout=3)  # fmt: skip

    assert source.in_block == {"a": 1, "b": 1, "c": 1}
    assert source.blocks == ["open 1", "close 1"]  # given back when the run ends


def test_an_abandoned_run_keeps_its_block_until_its_stuck_fetch_returns(
    pool: ThreadPoolExecutor,
) -> None:
    source, clock = HoldingSource(hang=frozenset({"b"})), FixedClock(NOW)
    for kpi_id in "abc":
        source.set(kpi_id, 1.0)
    try:
        fetch_in_pool(pool, source, [_kpi(k) for k in "abc"], clock, slots=PoolSlots(2),
                      limit=0.3, timeout=0.1)  # fmt: skip
        # the rest of the run went to a block of its own; the stuck one is still open
        assert source.in_block == {"a": 1, "b": 1, "c": 2}
        assert source.blocks == ["open 1", "open 2", "close 2"]
    finally:
        source.release.set()
    deadline = time.monotonic() + 5
    while "close 1" not in source.blocks and time.monotonic() < deadline:
        time.sleep(0.01)
    assert source.blocks == ["open 1", "open 2", "close 2", "close 1"]
