"""The only module that imports APScheduler.

One job per *batch*: the KPIs of one source on one schedule (``every`` or
``cron``) fall due together and run together through the batched path (one
state and history read and one transaction per batch of them, issue 15),
not one job per KPI. Jobs are coalesced, never run twice at once, with a
deliberate misfire grace; KPIs that fell due while the daemon was down run
once at start, as one catch-up batch per job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import structlog
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from apscheduler.util import undefined

from kpiwatch.config.rules import Kpi, RuleSet
from kpiwatch.model import KpiState

log = structlog.get_logger("kpiwatch.scheduler")

KPI_JOB_PREFIX = "kpis:"  # + "<source> <schedule>": the KPIs that fall due together
CATCH_UP_PREFIX = "catch-up:"  # one run now for a batch's KPIs that fell due while we were down
HEARTBEAT_EXECUTOR = "heartbeat"
# Interval jobs count from one fixed instant, so every replica fires a KPI at the
# same times and names the same due slot; a start-time anchor would differ per host.
INTERVAL_ANCHOR = datetime(2000, 1, 1, tzinfo=UTC)
# how far back to look for a cron expression's latest fire time (29 February at most)
_CRON_LOOKBACKS = (timedelta(hours=2), timedelta(days=2), timedelta(days=9),
                   timedelta(days=33), timedelta(days=100), timedelta(days=400),
                   timedelta(days=1500))  # fmt: skip


def _every_seconds(kpi: Kpi) -> int:
    every = kpi.schedule_every or timedelta(hours=1)
    return max(1, int(every.total_seconds()))


def kpi_trigger(kpi: Kpi, tz: ZoneInfo) -> BaseTrigger:
    if kpi.cron is not None:
        return CronTrigger.from_crontab(kpi.cron, timezone=tz)
    return IntervalTrigger(seconds=_every_seconds(kpi), start_date=INTERVAL_ANCHOR, timezone=tz)


def schedule_key(kpi: Kpi) -> str:
    """The KPI's schedule as a key: KPIs with equal keys fall due at the same instants."""
    return f"cron {kpi.cron}" if kpi.cron is not None else f"every {_every_seconds(kpi)}s"


def due_batches(rules: RuleSet) -> dict[str, tuple[str, ...]]:
    """The KPIs that fall due together, by job key "<source> <schedule>", in rule order."""
    batches: dict[str, list[str]] = {}
    for kpi in rules.kpis:
        batches.setdefault(f"{kpi.source} {schedule_key(kpi)}", []).append(kpi.id)
    return {key: tuple(ids) for key, ids in batches.items()}


def due_slot(kpi: Kpi, now: datetime, tz: ZoneInfo) -> datetime:
    """The newest time at or before ``now`` when ``kpi`` fell due: the same on every
    replica, so a lease can say "this due time is done"."""
    if kpi.cron is not None:
        return cron_slot(kpi.cron, now, tz)
    every = _every_seconds(kpi)
    elapsed = int((now - INTERVAL_ANCHOR).total_seconds())
    return INTERVAL_ANCHOR + timedelta(seconds=elapsed - elapsed % every)


def cron_slot(expression: str, now: datetime, tz: ZoneInfo) -> datetime:
    """The newest fire time of a crontab ``expression`` at or before ``now``."""
    trigger = CronTrigger.from_crontab(expression, timezone=tz)
    for lookback in _CRON_LOOKBACKS:
        fire: datetime | None = trigger.get_next_fire_time(None, now - lookback)
        if fire is None or fire > now:
            continue
        while True:
            later: datetime | None = trigger.get_next_fire_time(fire, fire + timedelta(seconds=1))
            if later is None or later > now:
                return fire.astimezone(UTC)
            fire = later
    return INTERVAL_ANCHOR  # never fired in four years: one slot for all that time


def due_times(kpi: Kpi, start: datetime, end: datetime, tz: ZoneInfo) -> Iterator[datetime]:
    """Every time ``kpi`` falls due in ``[start, end]``, oldest first (a replay's clock)."""
    if kpi.cron is None:
        every = timedelta(seconds=_every_seconds(kpi))
        slot = due_slot(kpi, start, tz)
        if slot < start:
            slot += every
        while slot <= end:
            yield slot
            slot += every
        return
    trigger = CronTrigger.from_crontab(kpi.cron, timezone=tz)
    fire: datetime | None = trigger.get_next_fire_time(None, start)
    while fire is not None and fire <= end:
        yield fire.astimezone(UTC)
        fire = trigger.get_next_fire_time(fire, fire + timedelta(seconds=1))


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
    def __init__(
        self,
        *,
        max_workers: int,
        misfire_grace: int,
        tz: ZoneInfo,
        # ("busy" | "missed", how many KPI evaluations), for KPI batches only
        on_skipped: Callable[[str, int], None] | None = None,
    ) -> None:
        self._tz = tz
        self._on_skipped = on_skipped
        self._sizes: dict[str, int] = {}  # job id -> KPIs in its batch: what a skip skips
        self._job_of: dict[str, str] = {}  # KPI id -> its batch's key
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
        self._scheduler.add_listener(self._skipped, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)

    def _skipped(self, event: JobEvent) -> None:
        """A KPI batch run APScheduler skipped: its KPIs counted as skipped (and logged
        once a minute), not one log line each (the log filter drops APScheduler's own)."""
        if self._on_skipped is None:
            return
        if not event.job_id.startswith((KPI_JOB_PREFIX, CATCH_UP_PREFIX)):
            return
        reason = "busy" if event.code == EVENT_JOB_MAX_INSTANCES else "missed"
        self._on_skipped(reason, self._sizes.get(event.job_id, 1))

    def sync_kpis(
        self,
        rules: RuleSet,
        states: Mapping[str, KpiState],
        now: datetime,
        run: Callable[[tuple[str, ...]], object],
    ) -> None:
        """Make the batch jobs match the rules: add new, reschedule or regroup changed,
        drop removed. ``run`` gets the ids of the KPIs due."""
        batches = due_batches(rules)
        wanted = {KPI_JOB_PREFIX + key: ids for key, ids in batches.items()}
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
        sizes: dict[str, int] = {}
        job_of: dict[str, str] = {}
        for job_id, ids in wanted.items():
            key = job_id[len(KPI_JOB_PREFIX) :]
            trigger = kpi_trigger(rules.by_id[ids[0]], self._tz)
            job_of.update(dict.fromkeys(ids, key))
            sizes[job_id] = len(ids)
            existing = self._scheduler.get_job(job_id)
            if existing is None or str(existing.trigger) != str(trigger) or existing.args != (ids,):
                # the regular job keeps to its trigger's times (the same on every replica)
                self._scheduler.add_job(
                    run, trigger, args=[ids], id=job_id,
                    name=f"evaluate {len(ids)} KPIs of {key}", replace_existing=True,
                )  # fmt: skip
            due_now = tuple(kpi_id for kpi_id in ids if starts[kpi_id] <= now)
            if due_now:  # those that fell due while we were down get one extra run now
                sizes[CATCH_UP_PREFIX + key] = len(due_now)
                self._scheduler.add_job(
                    run, DateTrigger(now, timezone=self._tz), args=[due_now],
                    id=CATCH_UP_PREFIX + key, name=f"catch up {len(due_now)} KPIs of {key}",
                    replace_existing=True, misfire_grace_time=None,
                )  # fmt: skip
        self._sizes, self._job_of = sizes, job_of

    def every(
        self,
        job_id: str,
        seconds: float,
        func: Callable[[], object],
        *,
        now: datetime | None = None,
        executor: str = "default",
    ) -> None:
        """A housekeeping job (reviews, outbox, heartbeat) every ``seconds``: first at
        ``now`` when given, else one interval from the start."""
        self._scheduler.add_job(
            func,
            IntervalTrigger(seconds=seconds, timezone=self._tz),
            id=job_id,
            name=job_id,
            replace_existing=True,
            # not None: APScheduler adds a job whose next_run_time is None paused
            next_run_time=undefined if now is None else now,
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
        """When ``kpi_id`` runs next: its batch's catch-up run if it is in one, else
        its batch's trigger."""
        key = self._job_of.get(kpi_id)
        if key is None:
            return None
        times = []
        for job_id in (CATCH_UP_PREFIX + key, KPI_JOB_PREFIX + key):
            job = self._scheduler.get_job(job_id)
            # a job added before the scheduler starts has no next_run_time yet
            at = getattr(job, "next_run_time", None)
            if at is not None and job is not None and kpi_id in job.args[0]:
                times.append(at)
        return min(times, default=None)

    def start(self) -> None:
        self._scheduler.start()

    def shutdown(self, *, wait: bool) -> None:
        """Stop scheduling; with ``wait`` the running jobs finish first."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=wait)
