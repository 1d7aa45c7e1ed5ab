"""When each KPI first runs after a start, and how its job is triggered."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from kpiwatch.config.rules import Kpi
from kpiwatch.model import KpiState, ReviewCadence, Status
from kpiwatch.runtime.scheduler import first_run, kpi_trigger

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
    scheduler.sync_kpis(rules, {}, now, lambda kpi_id: None)
    scheduler.start()
    try:
        ratio = scheduler.next_run("ratio")
        assert ratio is not None
        assert ratio >= now + timedelta(minutes=59)
    finally:
        scheduler.shutdown(wait=False)
