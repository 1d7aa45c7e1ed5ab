"""A daemon that cannot keep up says so once a minute, with the lag, not once per skip."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
import structlog

from kpiwatch.logs import _kpi_run_skipped
from kpiwatch.runtime.schedule_health import ScheduleHealth

NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)


def test_skips_are_counted_and_told_once_a_minute_with_the_largest_lag() -> None:
    health = ScheduleHealth()
    health.report(NOW)  # the first minute starts
    with structlog.testing.capture_logs() as logs:
        for i in range(5000):
            health.skipped("busy" if i % 10 else "missed")
            health.started(timedelta(seconds=i % 9))
        health.report(NOW + 30 * SECOND)  # within the minute: nothing yet
        assert logs == []
        health.report(NOW + 61 * SECOND)
        health.report(NOW + 62 * SECOND)
    [line] = logs
    assert line["event"] == "falling behind the schedule: evaluations skipped in the last minute"
    assert (line["skipped"], line["busy"], line["missed"]) == (5000, 4500, 500)
    assert line["max_lag_seconds"] == 8.0
    assert health.lag_seconds() == 8.0
    assert health.skipped_counts() == {"busy": 4500, "missed": 500}
    # a quiet minute: no line, the lag gauge falls back
    with structlog.testing.capture_logs() as logs:
        health.started(SECOND)
        health.report(NOW + 125 * SECOND)
    assert logs == []
    assert health.lag_seconds() == 1.0
    assert health.skipped_counts() == {"busy": 4500, "missed": 500}  # a counter


@pytest.mark.parametrize(
    ("message", "kept"),
    [
        ('Execution of job "evaluate churn (trigger: interval[0:00:10], next run at: x)" '
         "skipped: maximum number of running instances reached (1)", False),
        ('Run time of job "catch up churn (trigger: date[x])" was missed by 0:00:05', False),
        ('Run time of job "reviews (trigger: interval[0:01:00])" was missed by 0:00:05', True),
        ('Job "evaluate churn" raised an exception', True),
    ],
)  # fmt: skip
def test_apscheduler_lines_for_skipped_kpi_runs_are_dropped(message: str, kept: bool) -> None:
    record = logging.LogRecord("apscheduler.scheduler", logging.WARNING, __file__, 1, message,
                               None, None)  # fmt: skip
    assert _kpi_run_skipped(record) is kept
