"""Two daemons' worth of wiring (App) on one PostgreSQL database, in-process:
a due evaluation is done by one of them, and work a dead replica claimed is
taken over once its claim expires."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kpiwatch.config.settings import Settings
from kpiwatch.model import Observation
from kpiwatch.runtime.app import KPI_LEASE, App
from kpiwatch.runtime.scheduler import due_slot
from kpiwatch.store.leases import LeaseBook
from kpiwatch.testing import FixedClock

pytestmark = pytest.mark.postgres

RULES = """
kpis:
  - {id: signups, name: Signups, owner: ava@example.com, direction: higher_is_better,
     source: push, every: 1m, thresholds: {red: 10}}
  - {id: sales, name: Sales, owner: ava@example.com, direction: higher_is_better,
     source: push, every: 1h, thresholds: {red: 10},
     mute: [{cron: "0 8 * * *", for: 1810s, comment: morning load}]}
"""
START = datetime(2026, 3, 2, 8, 0, 5, tzinfo=UTC)


@pytest.fixture
def settings(tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.chdir(tmp_path)  # no config/kpiwatch.toml or .env here
    for name in [n for n in os.environ if n.startswith("KPIWATCH_")]:
        monkeypatch.delenv(name)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "kpis.yaml").write_text(RULES)
    return Settings(database_url=postgres_url, rules_dir=str(tmp_path / "rules"),
                    lease_seconds=30)  # fmt: skip


@pytest.fixture
def apps(settings: Settings) -> Iterator[tuple[App, App, FixedClock]]:
    clock = FixedClock(START)
    first, second = App(settings, clock), App(settings, clock)
    yield first, second, clock
    first.close()
    second.close()


def test_replicas_whose_clocks_differ_by_a_second_evaluate_each_slot_once(
    settings: Settings,
) -> None:
    """Each replica's job fires just after a minute starts by its own clock; one clock
    runs a second ahead of the other, so each minute both fire about a second apart."""
    minute = START.replace(second=0)
    ahead, behind = FixedClock(minute), FixedClock(minute)
    first, second = App(settings, ahead), App(settings, behind)
    try:
        evaluated = []
        for n in range(3):
            fire = minute + timedelta(minutes=n, milliseconds=50)
            for app, clock in ((first, ahead), (second, behind)):  # ahead fires first
                clock.set(fire)
                before = _evaluated(app)
                app._run_kpis(("signups",))
                if _evaluated(app) != before:
                    evaluated.append((app is first, _evaluated(app)))
        assert evaluated == [(True, minute + timedelta(minutes=n, milliseconds=50))
                             for n in range(3)]  # fmt: skip
    finally:
        first.close()
        second.close()


def _evaluated(app: App, kpi_id: str = "signups") -> datetime | None:
    state = app.store.get_state(kpi_id)
    return None if state is None else state.last_evaluated


def test_a_due_evaluation_is_done_by_one_replica(apps: tuple[App, App, FixedClock]) -> None:
    first, second, clock = apps
    assert first.leases.holder != second.leases.holder
    first._run_kpis(("signups",))
    assert _evaluated(first) == START
    clock.advance(timedelta(seconds=20))  # the same minute: the same due slot
    second._run_kpis(("signups",))
    assert _evaluated(second) == START  # done already: skipped
    clock.advance(timedelta(seconds=40))  # the next minute
    second._run_kpis(("signups",))
    assert _evaluated(first) == START + timedelta(minutes=1)


def test_work_claimed_by_a_dead_replica_is_taken_over_once(
    apps: tuple[App, App, FixedClock], postgres_url: str
) -> None:
    first, second, clock = apps
    # a replica claimed this evaluation and died before finishing it
    _claimed_by_a_dead_replica(first, clock, timedelta(seconds=-1))
    second._run_kpis(("signups",))  # its own schedule: the slot is claimed, but expired
    assert _evaluated(second) == START  # an expired claim does not block the due time
    # again, with the claim still valid when the schedule fires: skipped, then taken over
    clock.advance(timedelta(minutes=1))
    book, slot = _claimed_by_a_dead_replica(first, clock, timedelta(seconds=1))
    second._run_kpis(("signups",))
    assert _evaluated(second) == START  # someone else holds it: not evaluated twice
    assert book.abandoned("kpi:") == []  # not expired yet: not abandoned
    _wait_for_expiry(book)
    assert book.abandoned("kpi:") == [("kpi:signups", slot)]
    first._take_over_abandoned()
    assert _evaluated(first) == clock.now()
    assert book.abandoned("kpi:") == []
    second._take_over_abandoned()  # nothing left: the slot is done
    assert _evaluated(first) == clock.now()


def _claimed_by_a_dead_replica(
    app: App, clock: FixedClock, ttl: timedelta, kpi_id: str = "signups", *, wait: bool = False
) -> tuple[LeaseBook, datetime]:
    """A claim on the KPI's current due time by a replica that died: the book and the slot.
    With ``wait``, claimed as soon as ``app`` (running) has let go of its own claim."""
    kpi = app.kpi(kpi_id)
    assert kpi is not None
    slot = due_slot(kpi, clock.now(), app.settings.tz)
    book = LeaseBook(app.store.engine)

    def claimed() -> bool:
        return book.claim(KPI_LEASE + kpi_id, "dead-replica", ttl, slot=slot) is not None

    if wait:
        _wait_until(claimed)
    else:
        assert claimed()
    return book, slot


def test_a_dead_replicas_saved_but_unfinished_evaluation_is_not_done_twice(
    apps: tuple[App, App, FixedClock],
) -> None:
    # a replica saves its chunk batch by batch and marks the claims done at the end: killed
    # in between, it leaves evaluations saved for the due time under claims never finished
    first, second, clock = apps
    book, _ = _claimed_by_a_dead_replica(first, clock, timedelta(seconds=1))
    first.runner.evaluate_due(["signups"])  # saved, as the dead replica did; never finished
    saved = _evaluated(first)
    assert saved == START
    _wait_for_expiry(book)
    clock.advance(timedelta(seconds=20))  # the same due minute
    second._take_over_abandoned()
    assert _evaluated(second) == saved  # not evaluated a second time for the same due time
    assert book.abandoned("kpi:") == []  # its claim is finished: the slot is done
    first._run_kpis(("signups",))
    assert _evaluated(first) == saved
    clock.advance(timedelta(minutes=1))  # the next due time is evaluated as usual
    first._run_kpis(("signups",))
    assert _evaluated(first) == clock.now()


def test_a_running_replica_takes_over_a_dead_replicas_claim_by_itself(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the takeover is a job of the daemon's scheduler: it ran when called, but the job was
    # added paused and never ran by itself (a dead replica's work waited for its next time)
    monkeypatch.setattr("kpiwatch.runtime.app.LEASE_CHECK_SECONDS", 0.2)
    # the scheduler runs on the wall clock: jobs first due at a fixed clock's time months
    # ago would make it count every run it missed since
    start = datetime.now(UTC).replace(microsecond=0)
    clock = FixedClock(start)
    app = App(settings.model_copy(update={"http_port": 0}), clock)
    app.start()
    try:
        # sales, due every hour: its regular job fires at the wall clock's next hour, not
        # within this test (signups' would fire at the next minute, and could take the slot)
        _wait_until(lambda: _evaluated(app, "sales") == start)  # the first run, at start
        clock.advance(timedelta(hours=1))
        # the first run lets go of its claim just after saving the state: claim after that
        book, _ = _claimed_by_a_dead_replica(app, clock, timedelta(seconds=-1), "sales", wait=True)
        _wait_until(lambda: _evaluated(app, "sales") == clock.now())
        assert book.abandoned("kpi:") == []
    finally:
        app.stop()


def _wait_until(done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 15
    while not done():
        assert time.monotonic() < deadline, "not within 15 s"
        time.sleep(0.05)


def test_review_ticks_and_digests_run_on_one_replica_per_slot(
    apps: tuple[App, App, FixedClock],
) -> None:
    first, second, clock = apps
    book = LeaseBook(first.store.engine)
    first._tick_reviews()
    slot = first._tick_slot()
    # the second replica's tick in the same minute finds the slot done
    assert book.claim("job:reviews", second.leases.holder, timedelta(seconds=5), slot=slot) is None
    clock.advance(timedelta(minutes=1))
    second._tick_reviews()
    assert book.claim("job:reviews", first.leases.holder, timedelta(seconds=5),
                      slot=second._tick_slot()) is None  # fmt: skip


def test_a_dead_replicas_claim_is_taken_over_with_the_due_time_it_kept_others_from(
    apps: tuple[App, App, FixedClock],
) -> None:
    """The dead claim outlives the next due time, so the live replica skips that one;
    the takeover then evaluates once for both, and the next due time is done."""
    first, second, clock = apps
    kpi = first.kpi("signups")
    assert kpi is not None
    book = LeaseBook(first.store.engine)
    runs: list[str] = []
    for app in (first, second):
        app.runner.on_evaluated = lambda evaluation: runs.append(evaluation.kpi_id)
    slot = due_slot(kpi, clock.now(), first.settings.tz)
    assert book.claim("kpi:signups", "dead-replica", timedelta(seconds=1), slot=slot)
    clock.advance(timedelta(minutes=1))  # the next due time: the dead claim holds it
    second._run_kpis(("signups",))
    assert _evaluated(second) is None
    _wait_for_expiry(book)
    first._take_over_abandoned()
    assert _evaluated(first) == clock.now()
    second._run_kpis(("signups",))  # the same due time, as its schedule fires late
    assert runs == ["signups"]  # once for both due times
    assert book.abandoned("kpi:") == []


def _wait_for_expiry(book: LeaseBook) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not book.abandoned("kpi:"):
        time.sleep(0.1)


def test_a_mute_window_end_is_told_once_whichever_replica_checks(
    apps: tuple[App, App, FixedClock],
) -> None:
    """Each replica's check runs every minute at its own phase; together they cover
    time without overlap, so the "still red after the window" notice goes out once."""
    from kpiwatch.model import Observation

    first, second, clock = apps
    first.store.add_observations([Observation("sales", START, 5.0)])
    first.runner.evaluate_kpi("sales")  # red (5 < 10), muted: its change is held back
    for app in (first, second, first, second):  # 08:00:05 .. 08:30:05, minutes apart
        app._tick_mute_ends()
        clock.advance(timedelta(minutes=10, seconds=7))
    for app in (second, first, second):  # the window ended at 08:30:10: both check again
        app._tick_mute_ends()
        clock.advance(timedelta(seconds=40))
    notices = [e for e in first.store.events(kpi_id="sales") if "after_mute" in e.data]
    assert len(notices) == 1
    assert notices[0].data["after_mute"] == "morning load"


def test_reminders_are_ticked_on_one_replica_per_slot_and_by_run_once(
    apps: tuple[App, App, FixedClock],
) -> None:
    from prometheus_client import generate_latest

    from kpiwatch.model import EventKind, Observation

    first, second, clock = apps
    first.store.add_observations([Observation("signups", START, 5.0)])
    first.runner.evaluate_kpi("signups")  # red (5 < 10): the episode starts now
    since = clock.now()
    clock.advance(timedelta(days=1))
    first._tick_reminders()
    second._tick_reminders()  # the same minute: the slot is done
    book = LeaseBook(first.store.engine)
    assert book.claim("job:reminders", second.leases.holder, timedelta(seconds=5),
                      slot=second._tick_slot()) is None  # fmt: skip
    assert first.metrics.reminders() == {"red": 1}
    assert second.metrics.reminders() == {"red": 0}
    clock.advance(timedelta(days=2))  # +3d: the second reminder, from `run --once`
    result = second.run_once()
    assert result.reminders == 1
    keys = [e.key for e in first.store.events(kinds={EventKind.REMINDER})]
    assert keys == [f"signups:reminder:{since.isoformat()}:{n}" for n in (1, 2)]
    assert 'kpiwatch_reminders_total{status="red"} 1.0' in generate_latest(
        second.registry
    ).decode()


def test_the_retention_prunes_on_one_replica_an_hour_and_counts_the_rows(
    settings: Settings,
) -> None:
    clock = FixedClock(START)
    kept_two_days = settings.model_copy(update={"retention": timedelta(days=2)})
    first, second = App(kept_two_days, clock), App(kept_two_days, clock)
    try:
        hours = [START - timedelta(hours=h) for h in range(24 * 10)]  # ten days, hourly
        first.store.add_observations(
            Observation(k, t, 20.0) for k in ("signups", "x") for t in hours
        )
        first._prune()
        kept = [o.observed_at for o in first.store.history("signups")]
        assert kept == sorted(t for t in hours if t >= START - timedelta(days=2))
        # x is not in the rules (any more): its points age out too, to the last one
        assert [o.observed_at for o in first.store.history("x")] == kept
        assert first.metrics.pruned_rows() == {
            "observations": 2 * (len(hours) - len(kept)), "status_changes": 0, "events": 0,
            "outbox": 0,
        }
        # a backfill of old points: the other replica's prune in the same hour finds the
        # hour done, the next hour's prune deletes them
        old = [START - timedelta(days=5, minutes=m) for m in range(7)]
        first.store.add_observations(Observation("sales", t, 20.0) for t in old)
        second._prune()
        assert len(first.store.history("sales")) == 7
        assert second.metrics.pruned_rows() == {}
        clock.advance(timedelta(hours=1))
        second._prune()
        assert [o.observed_at for o in first.store.history("sales")] == [max(old)]  # newest stays
        # and signups' and x's points now two days and an hour old
        assert second.metrics.pruned_rows()["observations"] == 6 + 2
    finally:
        first.close()
        second.close()
