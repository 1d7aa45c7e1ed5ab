"""The retention's deletes (``KPIWATCH_RETENTION``): what each KPI's observations keep is
decided by :func:`kpiwatch.evaluation.retention.kept_history`, the store deletes the
rest, and the notifications, events and status changes older than the retention that
are done with. The daemon runs it once an hour on one replica; ``kpiwatch prune`` once."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog

from kpiwatch.config.durations import format_duration
from kpiwatch.config.rules import RuleSet
from kpiwatch.evaluation.retention import kept_history, kept_removed
from kpiwatch.runtime.leases import Leases
from kpiwatch.store.repository import Store
from kpiwatch.web.metrics import Metrics

log = structlog.get_logger("kpiwatch.pruning")

PRUNE_LEASE = "job:prune"
PRUNE_SECONDS = 3600  # the retention's deletes: once an hour, on one replica
PRUNE_FIRST_AFTER = timedelta(minutes=5)  # after a start: not in the way of the first cycle


def prune_history(
    store: Store, rules: RuleSet, retention: timedelta, now: datetime, *, dry_run: bool = False
) -> dict[str, int]:
    """Delete what ``retention`` drops at ``now``: the observations of the KPIs in
    ``rules`` and of those removed from them, then the records
    (:meth:`~kpiwatch.store.retention_store.RetentionStore.prune_records`). Returns the
    rows that went per table of :data:`~kpiwatch.store.retention_store.PRUNED_TABLES`
    (would go, with ``dry_run``)."""
    removed = kept_removed(now, retention)
    kept = dict.fromkeys(store.observed_kpis(), removed)
    kept.update((kpi.id, kept_history(kpi, now, retention)) for kpi in rules.kpis)
    rows = {"observations": store.prune_observations(kept, dry_run=dry_run)}
    rows.update(store.prune_records(now - retention, dry_run=dry_run))
    return rows


def retention_text(retention: timedelta) -> str:
    """The retention as people set it: ``400d`` (format_duration would say ``57w1d``)."""
    if retention % timedelta(days=1):
        return format_duration(retention)
    return f"{retention.days}d"


class HourlyPrune:
    """The daemon's prune job: on the one replica that claims this hour's slot, whose
    claim lasts the hour, so that a long first prune is not run twice."""

    def __init__(
        self,
        store: Store,
        leases: Leases,
        metrics: Metrics,
        retention: timedelta | None,
        rules: Callable[[], RuleSet],
        now: Callable[[], datetime],
        slot: Callable[[], datetime],
    ) -> None:
        self._store, self._leases, self._metrics = store, leases, metrics
        self._retention, self._rules, self._now, self._slot = retention, rules, now, slot

    def __call__(self) -> None:
        retention = self._retention
        if retention is None:
            return
        try:
            ttl = timedelta(seconds=PRUNE_SECONDS)
            with self._leases.hold(PRUNE_LEASE, slot=self._slot(), ttl=ttl) as claim:
                if claim is None:
                    return
                started = time.monotonic()
                rules = self._rules()
                removed = prune_history(self._store, rules, retention, self._now())
                self._metrics.pruned(removed)
                seconds = round(time.monotonic() - started, 3)
                log.info("history pruned", rows=removed, kpis=len(rules.kpis),
                         retention=retention_text(retention), seconds=seconds)  # fmt: skip
        except Exception:
            log.exception("pruning history failed; the next hour tries again")
