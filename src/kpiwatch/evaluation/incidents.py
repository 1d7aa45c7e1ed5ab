"""Data incidents: when a source as a whole fails, its owner hears once (SPEC §5a).

A source is in an incident while any of these holds:

* its latest fetch failed on the source itself (cannot connect, auth refused,
  timeout, a server error): :class:`~kpiwatch.errors.SourceUnavailable`;
* it feeds two or more KPIs and every one of them failed its latest fetch;
* two or more of its KPIs are stale (``max_age``);
* its ``freshness`` check fails.

One ``data_incident`` opens it, naming every KPI the source feeds, and one
``data_recovered`` closes it with the outage's duration; nothing in between,
however many KPIs fail or in what order. A single KPI's failing query on a
working source is not an incident: that KPI's owner hears about it
(:mod:`kpiwatch.evaluation.blindness`).

Pure: the runner keeps each KPI's latest outcome and passes them in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

from kpiwatch.evaluation.format import fmt_age, fmt_span
from kpiwatch.model import Event, EventKind

# the most KPI ids an incident message lists (the count is always exact)
LISTED = 50


class KpiOutcome(NamedTuple):
    """How a KPI's latest fetch from its source went."""

    at: datetime
    failed: bool  # no usable value: an error, or stale
    source_wide: bool = False  # failed on the source itself, not this KPI's query
    stale: bool = False
    reason: str | None = None


class SourceHealth(NamedTuple):
    """A source's incident state: up, or down since when and why."""

    up: bool
    since: datetime
    reason: str | None = None


def incident_reason(outcomes: Mapping[str, KpiOutcome], freshness: str | None) -> str | None:
    """Why the source as a whole fails now (the rules above), or None when it works.

    ``outcomes`` are in the order they were recorded: of two at the same moment,
    the one recorded last is the latest.
    """
    if freshness is not None:
        return freshness
    if not outcomes:
        return None
    order = list(outcomes.values())
    latest = max(reversed(order), key=lambda outcome: outcome.at)  # the last of the newest
    if latest.failed and latest.source_wide:
        return latest.reason
    if len(outcomes) < 2:
        return None
    failing = [outcome for outcome in outcomes.values() if outcome.failed]
    stale = [outcome for outcome in failing if outcome.stale]
    if len(failing) == len(outcomes):
        example = (latest if latest.failed else failing[-1]).reason
        return f"all {len(outcomes)} of its KPIs fail, e.g. {example}"
    if len(stale) >= 2:
        return f"{len(stale)} of its KPIs are stale, e.g. {stale[-1].reason}"
    return None


def step_incident(
    source: str,
    health: SourceHealth | None,
    reason: str | None,
    now: datetime,
    affected: Sequence[str],
) -> tuple[SourceHealth, tuple[Event, ...]]:
    """Fold the source's current ``reason`` (None: it works) into its incident state.

    Returns the new state and the event of an incident opening or closing.
    ``affected`` is every KPI the source feeds: while it is down, all of them are
    blind or judged on old data.
    """
    listed = {"kpis": list(affected[:LISTED]), "count": len(affected)}
    if reason is not None:
        if health is not None and not health.up:
            return health._replace(reason=reason), ()
        opened = Event(
            EventKind.DATA_INCIDENT, f"source:{source}:incident:{now.isoformat()}", now,
            source=source,
            data={"scope": "source", "reason": reason, "since": now.isoformat(), **listed},
        )  # fmt: skip
        return SourceHealth(False, now, reason), (opened,)
    if health is None or health.up:
        return SourceHealth(True, health.since if health is not None else now), ()
    duration = now - health.since
    closed = Event(
        EventKind.DATA_RECOVERED, f"source:{source}:recovered:{now.isoformat()}", now,
        source=source,
        data={
            "scope": "source", "reason": health.reason, "since": health.since.isoformat(),
            "duration_seconds": duration.total_seconds(), "duration": fmt_age(duration),
            **listed,
        },
    )  # fmt: skip
    return SourceHealth(True, now), (closed,)


def freshness_problem(last_load: datetime | None, now: datetime, max_age: timedelta) -> str | None:
    """Why a source's ``freshness`` check fails (its last load older than ``max_age``),
    or None when the data is fresh."""
    if last_load is None:
        return "freshness check: no load recorded (the query gave nothing)"
    age = now - last_load
    if age <= max_age:
        return None
    return f"stale: last load {fmt_age(age)} ago (freshness max_age {fmt_span(max_age)})"
