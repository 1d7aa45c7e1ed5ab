"""When each KPI first runs after a start, and how its job is triggered."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from kpiwatch.config.rules import Kpi
from kpiwatch.model import KpiState, ReviewCadence, Status
from kpiwatch.runtime.scheduler import cron_slot, due_slot, first_run, kpi_trigger

NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)  # a Wednesday
UTC_ZONE = ZoneInfo("UTC")


def _kpi(**schedule: object) -> Kpi:
    return Kpi.model_validate(
        {
            "id": "k",
            "name": "K",
            "owner": "o@example.com",
            "direction": "lower_is_better",
            "source": "wh",
            "query": "SELECT 1",
            **schedule,
        }
    )


def _state(last: datetime) -> KpiState:
    return KpiState("k", Status.GREEN, last, ReviewCadence.WEEKLY, last_evaluated=last)


def test_never_evaluated_runs_now() -> None:
    assert first_run(_kpi(every="1h"), None, NOW, UTC_ZONE) == NOW


def test_interval_not_yet_due_waits_for_its_time() -> None:
    last = NOW - timedelta(minutes=20)
    assert first_run(_kpi(every="1h"), _state(last), NOW, UTC_ZONE) == last + timedelta(hours=1)


def test_interval_that_fell_due_while_down_runs_now_once() -> None:
    assert first_run(_kpi(every="1h"), _state(NOW - timedelta(hours=5)), NOW, UTC_ZONE) == NOW


def test_cron_missed_fire_runs_now_and_future_fire_waits() -> None:
    kpi = _kpi(cron="0 8 * * MON-FRI")
    assert first_run(kpi, _state(NOW - timedelta(days=1)), NOW, UTC_ZONE) == NOW
    after_today = datetime(2026, 3, 4, 8, 30, tzinfo=UTC)
    assert first_run(kpi, _state(after_today), NOW, UTC_ZONE) == datetime(
        2026, 3, 5, 8, 0, tzinfo=UTC
    )


def test_default_schedule_is_hourly_and_cron_follows_the_timezone() -> None:
    assert "interval[1:00:00]" in str(kpi_trigger(_kpi(), UTC_ZONE))
    berlin = kpi_trigger(_kpi(cron="0 8 * * *"), ZoneInfo("Europe/Berlin"))
    fire = berlin.get_next_fire_time(None, NOW)
    assert fire is not None
    assert fire.astimezone(UTC).hour == 7  # 08:00 CET


def test_a_formula_whose_inputs_run_now_waits_for_them() -> None:
    from kpiwatch.config.loader import load_rule_text
    from kpiwatch.runtime.scheduler import Scheduler

    rules = load_rule_text(
        """
sources: {wh: {type: sql, url: "sqlite://"}}
kpis:
  - {id: a, name: A, owner: o@example.com, direction: lower_is_better, source: wh,
     query: SELECT 1, every: 1h}
  - {id: ratio, name: R, owner: o@example.com, direction: lower_is_better,
     source: formula, query: a * 2, every: 1h}
"""
    ).rules
    now = datetime.now(UTC)  # the real scheduler runs on the wall clock
    scheduler = Scheduler(max_workers=1, misfire_grace=60, tz=UTC_ZONE)
    ran: list[str] = []
    scheduler.sync_kpis(rules, {}, now, ran.append)
    scheduler.start()
    try:
        ratio = scheduler.next_run("ratio")
        assert ratio is not None
        # not now: at its next time on the hourly grid, after its inputs have run
        next_hour = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        assert ratio == next_hour
        deadline = time.monotonic() + 10
        while not ran and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ran == [("a",)]
        assert scheduler.next_run("a") == next_hour  # back on the grid after catching up
    finally:
        scheduler.shutdown(wait=False)


def test_a_batch_run_still_going_when_it_falls_due_again_counts_its_kpis_skipped() -> None:
    import threading

    from kpiwatch.config.loader import load_rule_text
    from kpiwatch.runtime.scheduler import Scheduler

    rules = load_rule_text(
        """
sources: {wh: {type: sql, url: "sqlite://"}}
kpis:
  - {id: slow, name: S, owner: o@example.com, direction: lower_is_better, source: wh,
     query: SELECT 1, every: 1s}
  - {id: slow2, name: S2, owner: o@example.com, direction: lower_is_better, source: wh,
     query: SELECT 2, every: 1s}
"""
    ).rules
    skipped: list[tuple[str, int]] = []
    release = threading.Event()
    scheduler = Scheduler(max_workers=2, misfire_grace=60, tz=UTC_ZONE,
                          on_skipped=lambda *skip: skipped.append(skip))  # fmt: skip
    scheduler.sync_kpis(rules, {}, datetime.now(UTC), lambda _: release.wait(10))
    scheduler.start()
    try:
        deadline = time.monotonic() + 10
        while not skipped and time.monotonic() < deadline:
            time.sleep(0.05)
        assert skipped
        assert set(skipped) == {("busy", 2)}  # one batch of two KPIs, both skipped
    finally:
        release.set()
        scheduler.shutdown(wait=False)


def test_a_housekeeping_job_given_no_start_runs_after_its_interval() -> None:
    # APScheduler adds a job whose next_run_time is None paused: the replicas' takeover of
    # abandoned work, the renewal of claims and the mute-window ends never ran in the daemon
    import threading

    from kpiwatch.runtime.scheduler import Scheduler

    ran, now = threading.Event(), threading.Event()
    scheduler = Scheduler(max_workers=2, misfire_grace=60, tz=UTC_ZONE, on_skipped=lambda *_: None)
    scheduler.every("later", 0.3, ran.set)
    scheduler.every("now", 3600, now.set, now=datetime.now(UTC))
    scheduler.start()
    try:
        assert now.wait(10)
        assert ran.wait(10), "a job added without a start time never ran"
    finally:
        scheduler.shutdown(wait=False)


# -- due slots: every replica must name the same due time -----------------------


def test_interval_slots_are_aligned_the_same_on_every_replica() -> None:
    kpi = _kpi(every="15m")
    slot = due_slot(kpi, NOW + timedelta(minutes=7, seconds=3), UTC_ZONE)
    assert slot == NOW  # 12:00 is on the 15-minute grid
    assert due_slot(kpi, NOW + timedelta(minutes=15), UTC_ZONE) == NOW + timedelta(minutes=15)
    assert due_slot(kpi, NOW - timedelta(microseconds=1), UTC_ZONE) == NOW - timedelta(minutes=15)
    # the trigger fires on the same grid, whenever the replica started
    fire = kpi_trigger(kpi, UTC_ZONE).get_next_fire_time(None, NOW + timedelta(minutes=1))
    assert fire == NOW + timedelta(minutes=15)


def test_a_replica_a_second_off_names_the_same_slot() -> None:
    kpi = _kpi(every="1m")
    fired = NOW + timedelta(minutes=3, milliseconds=20)  # a job runs a little after its time
    assert due_slot(kpi, fired, UTC_ZONE) == due_slot(kpi, fired + timedelta(seconds=1), UTC_ZONE)


def test_cron_slot_is_the_latest_fire_time_at_or_before_now() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    assert cron_slot("*/5 * * * *", NOW + timedelta(minutes=7), UTC_ZONE) == NOW + timedelta(
        minutes=5
    )
    assert cron_slot("0 8 * * *", NOW, berlin) == datetime(2026, 3, 4, 7, tzinfo=UTC)
    assert cron_slot("0 14 * * *", NOW, berlin) == datetime(2026, 3, 3, 13, tzinfo=UTC)
    assert cron_slot("0 9 1 */3 *", NOW, UTC_ZONE) == datetime(2026, 1, 1, 9, tzinfo=UTC)
    assert cron_slot("30 8 29 2 *", NOW, UTC_ZONE) == datetime(2024, 2, 29, 8, 30, tzinfo=UTC)
    exact = datetime(2026, 3, 4, 11, 55, tzinfo=UTC)
    assert cron_slot("*/5 * * * *", exact, UTC_ZONE) == exact
    assert due_slot(_kpi(cron="0 8 * * *"), NOW, berlin) == datetime(2026, 3, 4, 7, tzinfo=UTC)


def test_kpis_that_fall_due_together_are_one_job_per_source_and_schedule() -> None:
    from kpiwatch.config.loader import load_rule_text
    from kpiwatch.runtime.scheduler import Scheduler, due_batches

    text = """
sources: {wh: {type: sql, url: "sqlite://"}}
kpis:
  - {id: a, name: A, owner: o@example.com, direction: lower_is_better, source: wh,
     query: SELECT 1, every: 1m}
  - {id: b, name: B, owner: o@example.com, direction: lower_is_better, source: wh,
     query: SELECT 2, every: 60s}
  - {id: c, name: C, owner: o@example.com, direction: lower_is_better, source: wh,
     query: SELECT 3, every: 5m}
  - {id: d, name: D, owner: o@example.com, direction: lower_is_better, source: wh,
     query: SELECT 4, cron: "0 8 * * *"}
  - {id: e, name: E, owner: o@example.com, direction: lower_is_better, source: push,
     every: 1m}
"""
    rules = load_rule_text(text).rules
    assert due_batches(rules) == {
        "wh every 60s": ("a", "b"),
        "wh every 300s": ("c",),
        "wh cron 0 8 * * *": ("d",),
        "push every 60s": ("e",),
    }
    now = datetime.now(UTC)
    last = now - timedelta(seconds=1)  # a and b ran a second ago; c never did
    states = {k: KpiState(k, Status.GREEN, last, ReviewCadence.WEEKLY, last_evaluated=last)
              for k in ("a", "b", "d", "e")}  # fmt: skip
    scheduler = Scheduler(max_workers=1, misfire_grace=60, tz=UTC_ZONE)
    ran: list[tuple[str, ...]] = []
    scheduler.sync_kpis(rules, states, now, ran.append)
    try:
        jobs = {job.id: job.args for job in scheduler._scheduler.get_jobs()}  # before start
        assert jobs == {
            "kpis:wh every 60s": (("a", "b"),),
            "kpis:wh every 300s": (("c",),),
            "kpis:wh cron 0 8 * * *": (("d",),),
            "kpis:push every 60s": (("e",),),
            "catch-up:wh every 300s": (("c",),),  # only the one that never ran
        }
        scheduler.start()
        assert scheduler.next_run("a") == scheduler.next_run("b")
        # a reload that moves b to another schedule regroups the jobs
        moved = load_rule_text(text.replace("SELECT 2, every: 60s", "SELECT 2, every: 5m")).rules
        scheduler.sync_kpis(moved, states, now, ran.append)
        jobs = {job.id: job.args for job in scheduler._scheduler.get_jobs()}
        assert jobs["kpis:wh every 60s"] == (("a",),)
        assert jobs["kpis:wh every 300s"] == (("b", "c"),)  # rule order
    finally:
        scheduler.shutdown(wait=False)
