"""The retention's deletes (``KPIWATCH_RETENTION``): what each KPI keeps is decided by
:func:`kpiwatch.evaluation.retention.kept_history`, the store deletes the rest. The
daemon runs it once an hour on one replica; ``kpiwatch prune`` runs it once."""

from __future__ import annotations

from datetime import datetime, timedelta

from kpiwatch.config.durations import format_duration
from kpiwatch.config.rules import RuleSet
from kpiwatch.evaluation.retention import kept_history
from kpiwatch.store.repository import Store


def prune_history(
    store: Store, rules: RuleSet, retention: timedelta, now: datetime, *, dry_run: bool = False
) -> int:
    """Delete the observations of the KPIs in ``rules`` that ``retention`` drops at
    ``now``; returns how many rows went (would go, with ``dry_run``). The points of KPIs
    no longer in the rules stay: a KPI put back has its history."""
    kept = {kpi.id: kept_history(kpi, now, retention) for kpi in rules.kpis}
    return store.prune_observations(kept, dry_run=dry_run)


def retention_text(retention: timedelta) -> str:
    """The retention as people set it: ``400d`` (format_duration would say ``57w1d``)."""
    if retention % timedelta(days=1):
        return format_duration(retention)
    return f"{retention.days}d"
