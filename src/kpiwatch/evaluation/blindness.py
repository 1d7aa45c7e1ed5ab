"""Blindness: a data problem is not a verdict (SPEC §5a).

A KPI whose value cannot be had (source unreachable, query error, no rows,
non-numeric, stale beyond ``max_age``) is *blind*: it shows ``unknown`` with the
reason, while its verdict episode carries on untouched: ``since``, the ack, the
escalation, the review cadence and the Slack thread stay those of the last
verdict. When data returns, the evaluation compares the new verdict with that
one, so a blind spell never shows up as "red -> unknown -> red".

Who hears about the spell depends on its scope. A ``source`` problem (the
source itself fails) is the data owner's: the source's data incident
(:mod:`kpiwatch.evaluation.incidents`) tells them, and the KPI's owner hears
only if the spell outlasts ``blind_notice_after``. A ``kpi`` problem (this
KPI's query fails while its source works) is the KPI owner's, told once per
spell with the error verbatim. Either way the KPI's channels hear nothing.

Pure: the runner passes what it knows about the source as a :class:`DataContext`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

from kpiwatch.config.rules import Kpi
from kpiwatch.model import DataProblem, Event, EventKind, Finding, KpiState, Status

SOURCE = "source"
KPI = "kpi"
# findings that say the value could not be had (a KPI's first "no data yet" is no
# problem of anyone's: nothing has been asked of it yet)
DATA_RULES = frozenset({"source", "stale"})


class DataContext(NamedTuple):
    """What the runner knows about a KPI's source when it evaluates it."""

    error_scope: str = KPI  # the scope of the fetch's error, if it failed
    stale_scope: str = KPI  # the scope of a stale value (source: its source is stale too)
    notice_after: timedelta = timedelta(days=1)  # blind_notice_after in force
    data_owner: str = "on-call"  # who hears about the source's incidents
    incident_since: datetime | None = None  # the source's open incident, told then
    # the source whose problem it is, when not the KPI's own (a formula's blind input's)
    source: str | None = None


def problem_scope(finding: Finding, context: DataContext) -> str:
    """The scope of a data problem: whose problem it is."""
    return context.stale_scope if finding.rule == "stale" else context.error_scope


def owner_notice_due(problem: DataProblem, notice_after: timedelta, now: datetime) -> bool:
    """Whether the KPI's owner is to hear about this spell now: at once for a problem
    of their own query, after ``notice_after`` for their source's; once per spell."""
    if problem.told_at is not None:
        return False
    return problem.scope == KPI or now - problem.since >= notice_after


def track_problem(
    kpi: Kpi,
    previous: KpiState | None,
    findings: Sequence[Finding],
    now: datetime,
    context: DataContext,
) -> tuple[DataProblem | None, tuple[Event, ...]]:
    """The KPI's data problem after this evaluation, and the notice to its owner if due.

    A spell runs from the first evaluation with a problem to the first without one;
    its ``since`` and ``told_at`` carry over while it lasts, its reason and scope
    follow the latest evaluation.
    """
    finding = next((f for f in findings if f.rule in DATA_RULES), None)
    if finding is None:
        return None, ()
    before = previous.data_problem if previous is not None else None
    problem = DataProblem(
        since=before.since if before is not None else now,
        reason=finding.reason,
        scope=problem_scope(finding, context),
        source=context.source or kpi.source,
        told_at=before.told_at if before is not None else None,
    )
    if not owner_notice_due(problem, context.notice_after, now):
        return problem, ()
    return problem._replace(told_at=now), (_owner_notice(kpi, previous, problem, now, context),)


def _owner_notice(
    kpi: Kpi, previous: KpiState | None, problem: DataProblem, now: datetime, context: DataContext
) -> Event:
    """The one message of a spell to the KPI's owner; keyed by the spell, so sent once."""
    verdict = None if previous is None else verdict_of(previous)
    data: dict[str, object] = {
        "scope": problem.scope,
        "source": problem.source,
        "reason": problem.reason,
        "problem_since": problem.since.isoformat(),
        # what the message tells (SPEC §5): unknown for that reason, in the verdict's episode
        "status": Status.UNKNOWN.value,
        "reasons": [problem.reason],
        "since": (problem.since if previous is None else previous.since).isoformat(),
        "verdict": None if verdict is None else verdict.value,
        "value": None if previous is None else previous.value,
        "unit": kpi.unit,
    }
    if problem.scope == SOURCE:
        data["data_owner"] = context.data_owner
        told = context.incident_since
        data["data_owner_told"] = None if told is None else told.isoformat()
    return Event(
        kind=EventKind.DATA_INCIDENT,
        key=f"{kpi.id}:data_problem:{problem.since.isoformat()}",
        at=now,
        kpi_id=kpi.id,
        source=problem.source,
        data=data,
    )


def verdict_of(state: KpiState) -> Status | None:
    """The last green/yellow/red of a state, None before the first."""
    status = state.episode_status
    return None if status is Status.UNKNOWN else status


def blind_state(
    kpi: Kpi,
    previous: KpiState | None,
    findings: Sequence[Finding],
    problem: DataProblem | None,
    now: datetime,
    error: str | None,
    next_review: datetime,
) -> KpiState:
    """The state of a KPI that could not be judged: ``unknown`` with the reason, the
    episode of its last verdict carried on (value, since, escalation, ack, reminders)."""
    reasons = tuple(finding.reason for finding in findings)
    if previous is None:
        return KpiState(
            kpi_id=kpi.id, status=Status.UNKNOWN, since=now, review=kpi.review,
            reasons=reasons, last_evaluated=now, next_review=next_review, error=error,
            data_problem=problem,
        )  # fmt: skip
    return previous._replace(
        status=Status.UNKNOWN,
        verdict=verdict_of(previous),
        reasons=reasons,
        last_evaluated=now,
        next_review=next_review,
        error=error,
        data_problem=problem,
    )


def judged_basis(previous: KpiState | None) -> KpiState | None:
    """What a new verdict is compared with: the last verdict's state (a blind spell
    between them does not count), or None before the first verdict."""
    if previous is None:
        return None
    verdict = verdict_of(previous)
    if verdict is None:
        return None
    return previous._replace(status=verdict)
