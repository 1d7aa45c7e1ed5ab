"""The runner's memory of its sources: each KPI's latest outcome and each source's incident.

Scope decisions (SPEC §5a) need more than one KPI: "every KPI of the source
fails" or "several of its KPIs are stale" is only known across them. The runner
asks :meth:`SourceWatch.context` before it evaluates a KPI and tells
:meth:`SourceWatch.record` after; the rules themselves live in
:mod:`kpiwatch.evaluation.incidents` and :mod:`kpiwatch.evaluation.blindness`.

Thread-safe: the scheduler's pool evaluates KPIs of one source concurrently.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

from kpiwatch.config.rules import BUILTIN_SOURCES, Kpi, RuleSet, SqlSource
from kpiwatch.evaluation.blindness import KPI, SOURCE, DataContext
from kpiwatch.evaluation.incidents import (
    KpiOutcome,
    SourceHealth,
    incident_reason,
    step_incident,
)
from kpiwatch.model import Event


class HealthChange(NamedTuple):
    """A source's incident opened or closed (or first recorded): what to persist."""

    source: str
    health: SourceHealth
    events: tuple[Event, ...]


class SourceWatch:
    def __init__(self, health: Mapping[str, SourceHealth], notice_after: timedelta) -> None:
        self._lock = threading.Lock()
        self._health: dict[str, SourceHealth] = dict(health)
        self._outcomes: defaultdict[str, dict[str, KpiOutcome]] = defaultdict(dict)
        # per source, how many of those outcomes failed and how many are stale: what a
        # KPI's context asks of "the others" in O(1), not a pass over them all per KPI
        self._failed: defaultdict[str, int] = defaultdict(int)
        self._stale: defaultdict[str, int] = defaultdict(int)
        self._pruned_for: dict[str, RuleSet] = {}  # the rules each source's outcomes match
        self._freshness: dict[str, str | None] = {}  # source -> why its data is stale
        self._checked: dict[str, datetime] = {}  # source -> last freshness check
        self._notice_after = notice_after

    def incident(self, source: str) -> SourceHealth | None:
        """The source's open incident, or None while it works."""
        with self._lock:
            health = self._health.get(source)
        return health if health is not None and not health.up else None

    def freshness_problem(self, source: str) -> str | None:
        """Why the source's data is stale by its own ``freshness`` check, or None."""
        with self._lock:
            return self._freshness.get(source)

    def context(
        self, rules: RuleSet, kpi: Kpi, source_wide: bool, *, via: str | None = None
    ) -> DataContext:
        """What the evaluation of ``kpi`` needs to know about its source.

        ``source_wide``: the fetch failed on the source itself; ``via``: the source a
        formula is blind through (its blind input's), whose owner and incident it names.
        A failing query is the
        KPI's own problem only while the source is seen to work: it feeds this KPI
        alone, or another of its KPIs' latest fetch succeeded. Until then (the
        daemon's first poll, every other KPI failing too) it is the source's.
        """
        notice_after = kpi.blind_notice_after or self._notice_after
        name = via or kpi.source
        config = rules.sources.get(name)
        if config is None:  # formula, push: their own problem
            return DataContext(SOURCE if source_wide else KPI, KPI, notice_after)
        with self._lock:
            health = self._health.get(name)
            down = health is not None and not health.up
            own = self._outcomes[name].get(kpi.id)
            others = len(self._outcomes[name]) - (own is not None)
            others_failed = self._failed[name] - (own is not None and own.failed)
            others_stale = self._stale[name] - (own is not None and own.stale) > 0
        # every other KPI failing (or none known yet): the source is not seen to work
        unproven = len(rules.kpis_of_source.get(name, ())) > 1 and others_failed == others
        declared = isinstance(config, SqlSource) and config.freshness is not None
        return DataContext(
            error_scope=SOURCE if source_wide or down or unproven else KPI,
            stale_scope=SOURCE if down or others_stale or declared else KPI,
            notice_after=notice_after,
            data_owner=config.owner or "on-call",
            incident_since=health.since if down and health is not None else None,
            source=via,
        )

    def record(self, rules: RuleSet, kpi: Kpi, outcome: KpiOutcome) -> HealthChange | None:
        """Note a KPI's outcome; the source's incident change it causes, if any."""
        changes = self.record_many(rules, [(kpi, outcome)])
        return changes[0] if changes else None

    def record_many(
        self, rules: RuleSet, outcomes: Sequence[tuple[Kpi, KpiOutcome]]
    ) -> list[HealthChange]:
        """Note a batch's outcomes, then step each source they touch once: the incident
        changes they cause. A batch of a source's KPIs fetched together counts as one
        look at the source, and costs one pass over its outcomes, not one per KPI."""
        touched: dict[str, datetime] = {}
        with self._lock:
            for kpi, outcome in outcomes:
                if kpi.source in BUILTIN_SOURCES or kpi.source not in rules.sources:
                    continue
                self._put(kpi.source, kpi.id, outcome)
                touched[kpi.source] = max(outcome.at, touched.get(kpi.source, outcome.at))
            changes = [self._step(rules, source, at) for source, at in touched.items()]
        return [change for change in changes if change is not None]

    def _put(self, source: str, kpi_id: str, outcome: KpiOutcome | None) -> None:
        """Replace (or with None remove) a KPI's outcome, keeping the counts."""
        outcomes = self._outcomes[source]
        old = outcomes.pop(kpi_id, None)  # re-inserted: the dict's order is the recording order
        if old is not None:
            self._failed[source] -= old.failed
            self._stale[source] -= old.stale
        if outcome is not None:
            outcomes[kpi_id] = outcome
            self._failed[source] += outcome.failed
            self._stale[source] += outcome.stale

    def record_freshness(
        self, rules: RuleSet, source: str, problem: str | None, now: datetime
    ) -> HealthChange | None:
        """Note a freshness check's result; the incident change it causes, if any."""
        with self._lock:
            self._freshness[source] = problem
            self._checked[source] = now
            return self._step(rules, source, now)

    def freshness_due(self, source: str, every: timedelta, now: datetime) -> bool:
        with self._lock:
            last = self._checked.get(source)
        return last is None or now - last >= every

    def _step(self, rules: RuleSet, source: str, now: datetime) -> HealthChange | None:
        fed = rules.kpis_of_source.get(source, ())
        outcomes = self._outcomes[source]
        if self._pruned_for.get(source) is not rules:  # new rules: forget removed KPIs
            kept = set(fed)
            for gone in [kpi_id for kpi_id in outcomes if kpi_id not in kept]:
                self._put(source, gone, None)
            self._pruned_for[source] = rules
        reason = incident_reason(outcomes, self._freshness.get(source))
        before = self._health.get(source)
        health, events = step_incident(source, before, reason, now, list(fed))
        self._health[source] = health
        if before is not None and before.up == health.up:
            return None
        return HealthChange(source, health, events)
