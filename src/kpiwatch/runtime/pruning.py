"""The retention's deletes (``KPIWATCH_RETENTION``): what each KPI's observations keep is
decided by :func:`kpiwatch.evaluation.retention.kept_history`, the store deletes the
rest, and the notifications, events and status changes older than the retention that
are done with. The daemon runs it once an hour on one replica; ``kpiwatch prune`` once."""

from __future__ import annotations

from datetime import datetime, timedelta

from kpiwatch.config.durations import format_duration
from kpiwatch.config.rules import RuleSet
from kpiwatch.evaluation.retention import kept_history
from kpiwatch.store.repository import Store


def prune_history(
    store: Store, rules: RuleSet, retention: timedelta, now: datetime, *, dry_run: bool = False
) -> dict[str, int]:
    """Delete what ``retention`` drops at ``now``: the observations of the KPIs in
    ``rules`` (those of KPIs no longer in the rules stay: a KPI put back has its
    history), then the records (:meth:`Store.prune_records`). Returns the rows that went
    per table of :data:`~kpiwatch.store.repository.PRUNED_TABLES` (would go, with
    ``dry_run``)."""
    kept = {kpi.id: kept_history(kpi, now, retention) for kpi in rules.kpis}
    rows = {"observations": store.prune_observations(kept, dry_run=dry_run)}
    rows.update(store.prune_records(now - retention, dry_run=dry_run))
    return rows


def retention_text(retention: timedelta) -> str:
    """The retention as people set it: ``400d`` (format_duration would say ``57w1d``)."""
    if retention % timedelta(days=1):
        return format_duration(retention)
    return f"{retention.days}d"
