"""The only module that imports APScheduler.

One job per KPI (``every`` or ``cron``), coalesced, never two runs of one KPI
at once, a deliberate misfire grace; KPIs that fell due while the daemon was
down run once at start.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import structlog
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from kpiwatch.config.rules import Kpi, RuleSet
from kpiwatch.model import KpiState

log = structlog.get_logger("kpiwatch.scheduler")

KPI_JOB_PREFIX = "kpi:"
HEARTBEAT_EXECUTOR = "heartbeat"


def kpi_trigger(kpi: Kpi, tz: ZoneInfo) -> BaseTrigger:
    if kpi.cron is not None:
        return CronTrigger.from_crontab(kpi.cron, timezone=tz)
    every = kpi.schedule_every or timedelta(hours=1)
    return IntervalTrigger(seconds=max(1, int(every.total_seconds())), timezone=tz)


def first_run(kpi: Kpi, state: KpiState | None, now: datetime, tz: ZoneInfo) -> datetime:
    """When a KPI should first run after start: now if it fell due while we were down."""
    last = state.last_evaluated if state else None
    if last is None:
        return now
    if kpi.cron is not None:
        due = CronTrigger.from_crontab(kpi.cron, timezone=tz).get_next_fire_time(None, last)
    else:
        due = last + (kpi.schedule_every or timedelta(hours=1))
    return now if due is None or due <= now else due


class Scheduler:
    def __init__(self, *, max_workers: int, misfire_grace: int, tz: ZoneInfo) -> None:
        self._tz = tz
        self._scheduler = BackgroundScheduler(
            executors={
                "default": ThreadPoolExecutor(max_workers),
                # its own thread: a pool busy with slow sources is not a dead scheduler
                HEARTBEAT_EXECUTOR: ThreadPoolExecutor(1),
            },
            job_defaults={
                "coalesce": True,  # many missed runs become one
                "max_instances": 1,  # never two runs of one KPI at once
                "misfire_grace_time": misfire_grace,
            },
            timezone=tz,
        )

    def sync_kpis(
        self,
        rules: RuleSet,
        states: Mapping[str, KpiState],
        now: datetime,
        run: Callable[[str], object],
    ) -> None:
        """Make the KPI jobs match the rules: add new, reschedule changed, drop removed."""
        wanted = {KPI_JOB_PREFIX + k.id: k for k in rules.kpis}
        for job in self._scheduler.get_jobs():
            if job.id.startswith(KPI_JOB_PREFIX) and job.id not in wanted:
                job.remove()
        starts = {k.id: first_run(k, states.get(k.id), now, self._tz) for k in rules.kpis}
        for formula, inputs in rules.formula_inputs.items():
            # its inputs run now and re-run it after them; running it too would
            # judge it before its inputs have values
            if any(starts.get(name) == now for name in inputs):
                trigger = kpi_trigger(rules.by_id[formula], self._tz)
                starts[formula] = trigger.get_next_fire_time(None, now) or now
        for job_id, kpi in wanted.items():
            trigger = kpi_trigger(kpi, self._tz)
            existing = self._scheduler.get_job(job_id)
            if existing is not None and str(existing.trigger) == str(trigger):
                continue
            start = starts[kpi.id]
            self._scheduler.add_job(
                run,
                trigger,
                args=[kpi.id],
                id=job_id,
                name=f"evaluate {kpi.id}",
                replace_existing=True,
                next_run_time=start,
            )

    def every(
        self,
        job_id: str,
        seconds: float,
        func: Callable[[], object],
        *,
        now: datetime | None = None,
        executor: str = "default",
    ) -> None:
        """A housekeeping job (reviews, outbox, heartbeat) every ``seconds``."""
        self._scheduler.add_job(
            func,
            IntervalTrigger(seconds=seconds, timezone=self._tz),
            id=job_id,
            name=job_id,
            replace_existing=True,
            next_run_time=now,
            executor=executor,
        )

    def cron(self, job_id: str, expression: str, func: Callable[[], object]) -> None:
        self._scheduler.add_job(
            func,
            CronTrigger.from_crontab(expression, timezone=self._tz),
            id=job_id,
            name=job_id,
            replace_existing=True,
        )

    def next_run(self, kpi_id: str) -> datetime | None:
        job = self._scheduler.get_job(KPI_JOB_PREFIX + kpi_id)
        return job.next_run_time if job is not None else None

    def start(self) -> None:
        self._scheduler.start()

    def shutdown(self, *, wait: bool) -> None:
        """Stop scheduling; with ``wait`` the running jobs finish first."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=wait)
