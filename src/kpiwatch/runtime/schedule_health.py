"""Whether the daemon keeps up with its schedule, told once a minute, not once per skip.

A daemon that cannot keep up used to log one APScheduler line per skipped run
(65,256 of them in 4 minutes at 5,000 KPIs every 10 s). Here each KPI run
reports how late it started (``now`` minus the due time it runs for) and the
scheduler reports each batch run it skipped, with its KPIs (still running from the last time:
``busy``; too late for the misfire grace: ``missed``). The metrics show them
(``kpiwatch_schedule_lag_seconds``, ``kpiwatch_evaluations_skipped_total``), and
:meth:`ScheduleHealth.report` logs one line a minute while runs are skipped.

Thread-safe: runs report from the scheduler's pool.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import structlog

log = structlog.get_logger("kpiwatch.schedule")

SKIP_REASONS = ("busy", "missed")
REPORT_EVERY = timedelta(minutes=1)


class ScheduleHealth:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._skipped = dict.fromkeys(SKIP_REASONS, 0)  # since start: the counter
        self._window_skipped = dict.fromkeys(SKIP_REASONS, 0)  # since the last report
        self._window_lag = 0.0  # the largest start lag since the last report
        self._lag: float | None = None  # the largest lag of the last whole minute
        self._reported: datetime | None = None  # when the current minute began

    def started(self, lag: timedelta) -> None:
        """A KPI run started ``lag`` after the due time it runs for."""
        seconds = max(0.0, lag.total_seconds())
        with self._lock:
            self._window_lag = max(self._window_lag, seconds)

    def skipped(self, reason: str, count: int = 1) -> None:
        """``count`` KPI evaluations were skipped (a batch's run): ``busy`` (its last run
        still going) or ``missed``."""
        with self._lock:
            self._skipped[reason] = self._skipped.get(reason, 0) + count
            self._window_skipped[reason] = self._window_skipped.get(reason, 0) + count

    def lag_seconds(self) -> float:
        """The largest start lag of the last whole minute (of this one, before the first)."""
        with self._lock:
            return self._window_lag if self._lag is None else self._lag

    def skipped_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._skipped)

    def report(self, now: datetime) -> None:
        """Close the minute when one has passed: one log line if runs were skipped."""
        with self._lock:
            if self._reported is None:
                self._reported = now
                return
            if now - self._reported < REPORT_EVERY:
                return
            self._reported = now
            skipped, self._window_skipped = self._window_skipped, dict.fromkeys(SKIP_REASONS, 0)
            lag = self._lag = self._window_lag
            self._window_lag = 0.0
        total = sum(skipped.values())
        if total:
            log.warning(
                "falling behind the schedule: evaluations skipped in the last minute",
                skipped=total, busy=skipped["busy"], missed=skipped["missed"],
                max_lag_seconds=round(lag, 1),
                hint="fewer or slower-polled KPIs, more KPIWATCH_MAX_WORKERS, or a replica",
            )  # fmt: skip
