"""Logging set-up: APScheduler's expected outbox skips are not warnings people see."""

from __future__ import annotations

import logging

import pytest

from kpiwatch.logs import configure_logging

SKIPPED = 'Execution of job "%s" skipped: maximum number of running instances reached (%d)'


def test_a_busy_outbox_tick_is_quiet_but_a_busy_kpi_job_is_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    configure_logging("json")
    scheduler = logging.getLogger("apscheduler.scheduler")
    with caplog.at_level(logging.WARNING):
        scheduler.warning(SKIPPED, "outbox (trigger: interval[0:00:00.250000])", 1)
        scheduler.warning(SKIPPED, "evaluate churn (trigger: interval[0:05:00])", 1)
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1
    assert messages[0].startswith('Execution of job "evaluate churn')
