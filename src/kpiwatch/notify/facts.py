"""What an event says about its KPI, as it was when it happened, and what changed since.

A message reports its event: the status, value and reasons recorded in the
event's data at evaluation time, never the KPI's state at send time (a
delivery retried for an hour would otherwise tell a different story). When the
state has moved on since, :func:`since_then` words it in one or two lines.
Every channel renders from here, so the rule lives once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NamedTuple

from kpiwatch.model import Event, EventKind, KpiState, Status
from kpiwatch.notify.notice import Notice
from kpiwatch.notify.text import format_value


class Facts(NamedTuple):
    """A KPI event's status, value and reasons when it happened, and its episode."""

    status: str  # green | yellow | red | unknown
    value: float | None
    reasons: tuple[str, ...]
    episode: datetime  # KpiState.since of the episode the event belongs to


def episode_since(event: Event) -> datetime:
    """The start of the episode ``event`` belongs to: the one it was raised in, not the one now.

    A status change starts its own (the state's ``since`` is the change's moment);
    other KPI events carry their episode's start in ``data["since"]``.
    """
    since = event.data.get("since")
    if event.kind is EventKind.STATUS_CHANGED or not isinstance(since, str):
        return event.at
    return datetime.fromisoformat(since)


def closed_episode(event: Event) -> datetime | None:
    """The start of the non-green episode a status change ended, or None.

    Set at evaluation time (``data["previous_since"]``); None for a first
    evaluation, a change from green, or rows recorded before the field existed.
    """
    if event.kind is not EventKind.STATUS_CHANGED or event.data.get("from") in (None, "green"):
        return None
    since = event.data.get("previous_since")
    return datetime.fromisoformat(since) if isinstance(since, str) else None


def facts(notice: Notice) -> Facts | None:
    """The event's own status, value and reasons; None for an event about no KPI.

    Rows recorded before every event carried them (a de-escalation had none)
    borrow the state's only while it is still the event's episode.
    """
    event, state = notice.event, notice.state
    if event.kpi_id is None:
        return None
    data = event.data
    episode = episode_since(event)
    current = state if state is not None and not _ended(state, episode) else None
    status = data.get("to") or data.get("status")
    if status is None and event.kind is EventKind.DE_ESCALATED:
        status = Status.GREEN.value  # de-escalation only happens on a green run
    if status is None and current is not None:
        status = current.status.value
    if str(status) not in _STATUSES:
        status = Status.UNKNOWN.value
    if "value" in data:
        raw = data["value"]
        value = float(raw) if isinstance(raw, int | float) else None
    else:
        value = current.value if current is not None else None
    reasons = data.get("reasons")
    if reasons is None:
        reasons = current.reasons if current is not None else ()
    return Facts(str(status), value, tuple(str(r) for r in reasons), episode)


_STATUSES = frozenset(s.value for s in Status)


def since_then(notice: Notice, unit: str) -> list[str]:
    """Plain-text lines on how the KPI differs now from what the event says; [] if it doesn't.

    ``now: red 6.4 % (value 6.4 % > red 5.5 %)`` when the status or value moved;
    ``resolved since 2026-03-02 14:00 UTC`` when the event's non-green episode has
    since ended in green.
    """
    told, state = facts(notice), notice.state
    if told is None or state is None:
        return []
    lines = []
    if state.status.value != told.status or state.value != told.value:
        reason = f" ({state.reasons[0]})" if state.reasons else ""
        lines.append(f"now: {state.status.value} {format_value(state.value, unit)}{reason}")
    recovered = told.status != Status.GREEN.value and state.status is Status.GREEN
    if recovered and _ended(state, told.episode):
        lines.append(f"resolved since {when(state.since)}")
    return lines


def plan_of(notice: Notice) -> float | None:
    """The plan of the period the event judged (a KPI with a plan per period): the
    event's own when its data carries one, else the state's (``KpiState.plan``: the
    judged period's; None without a plan, or for a period the plan has no entry for)."""
    data = notice.event.data
    if "plan" in data:
        raw = data["plan"]
        return float(raw) if isinstance(raw, int | float) else None
    return notice.state.plan if notice.state is not None else None


def state_now(notice: Notice) -> KpiState | None:
    """The state when it is still the event's episode (its review, next review); else None."""
    told, state = facts(notice), notice.state
    if told is None or state is None or _ended(state, told.episode):
        return None
    return state


def _ended(state: KpiState, episode: datetime) -> bool:
    """The episode that started at ``episode`` is over: the state is in a later one."""
    return state.since > episode


def when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
