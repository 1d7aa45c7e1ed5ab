"""What the daemon counts as it works (evaluations, deliveries, reminders, query times).

The exporter (:mod:`kpiwatch.web.exporter`) renders these as counters and gauges.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

from kpiwatch.model import Evaluation, Event, Status
from kpiwatch.runtime.schedule_health import ScheduleHealth

EVALUATION_RESULTS = (*(s.value for s in Status), "error")  # error: the evaluation raised
BASELINE_RESULTS = ("sent", "dead")  # alert rules use increase(): they need a 0 to start from


class Metrics:
    """What the daemon counts as it works; the runner's and outbox's hooks call these.

    Thread-safe: the hooks run on the scheduler's and outbox's worker threads.
    """

    def __init__(self, channels: Iterable[str]) -> None:
        self.channels = tuple(dict.fromkeys(channels))
        self._lock = threading.Lock()
        self._evaluations = dict.fromkeys(EVALUATION_RESULTS, 0)
        self._notifications = {(c, r): 0 for c in self.channels for r in BASELINE_RESULTS}
        self._query_seconds: dict[str, float] = {}
        # red from the start: alert rules use increase(), which needs a 0 to start from
        self._reminders = {Status.RED.value: 0}
        self._pruned: dict[str, int] = {}  # rows the retention deleted, per table
        self.schedule = ScheduleHealth()  # start lags and skipped runs of the KPI jobs

    def evaluated(self, evaluation: Evaluation) -> None:
        """Count one evaluation under its effective status (runner.on_evaluated)."""
        with self._lock:
            self._evaluations[evaluation.status.value] += 1

    def evaluation_failed(self, kpi_id: str) -> None:
        """Count one evaluation that raised (the KPI id is in the log, not a label)."""
        del kpi_id
        with self._lock:
            self._evaluations["error"] += 1

    def fetched(self, source: str, seconds: float) -> None:
        """Remember how long the last query of ``source`` took (runner.on_fetched)."""
        with self._lock:
            self._query_seconds[source] = seconds

    def delivered(self, channel: str, result: str) -> None:
        """Count one delivery outcome: sent | dead | suppressed | retried (outbox.on_result)."""
        with self._lock:
            key = (channel, result)
            self._notifications[key] = self._notifications.get(key, 0) + 1

    def reminded(self, event: Event) -> None:
        """Count one reminder stored, by its episode's status (runner.on_reminded)."""
        status = str(event.data.get("status", Status.RED.value))
        with self._lock:
            self._reminders[status] = self._reminders.get(status, 0) + 1

    def pruned(self, rows: Mapping[str, int]) -> None:
        """Count the rows one prune deleted per table (runtime.pruning.HourlyPrune)."""
        with self._lock:
            for table, count in rows.items():
                self._pruned[table] = self._pruned.get(table, 0) + count

    def pruned_rows(self) -> dict[str, int]:
        """A copy of the rows pruned per table, taken under the lock."""
        with self._lock:
            return dict(self._pruned)

    def reminders(self) -> dict[str, int]:
        """A copy of the reminder counts by status, taken under the lock."""
        with self._lock:
            return dict(self._reminders)

    def snapshot(self) -> tuple[dict[str, int], dict[tuple[str, str], int], dict[str, float]]:
        """Copies of (evaluations, notifications, query seconds), taken under the lock."""
        with self._lock:
            return dict(self._evaluations), dict(self._notifications), dict(self._query_seconds)
