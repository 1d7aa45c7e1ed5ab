"""Reminders: an unacknowledged red (or, opted in, yellow) episode is told again, with backoff.

The schedule counts from the episode's start: the first reminder ``first``
after it, each next gap ``factor`` times the last, capped at ``max``
(1d, 2d, 4d, 7d, 7d, ... is reminders at +1d, +3d, +7d, +14d, +21d).

Like reviews, missed reminders coalesce: a tick that finds reminders 2 and 3
both due tells number 3 once. The schedule moves on whatever the delivery
does: a reminder that falls in a silence or mute window is recorded and
suppressed by the outbox (Alertmanager's ``repeat_interval`` behaves the same),
so nothing piles up to be sent when the window ends.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import NamedTuple

from kpiwatch.config.rules import Reminders
from kpiwatch.model import Event, EventKind, KpiState, Status


class ReminderPolicy(NamedTuple):
    """A KPI's reminder schedule with every key resolved."""

    first: timedelta = timedelta(days=1)
    factor: float = 2.0
    max: timedelta = timedelta(days=7)
    yellow: bool = False

    def reminds(self, status: Status) -> bool:
        """Whether episodes of ``status`` get reminders at all."""
        return status is Status.RED or (self.yellow and status is Status.YELLOW)


DEFAULT_REMINDERS = ReminderPolicy()  # KPIWATCH_REMINDER_* unset


def reminder_policy(
    kpi: Reminders | None, team: Reminders | None, defaults: ReminderPolicy
) -> ReminderPolicy:
    """The KPI's keys win, then its team's, then ``defaults`` (the settings), key by key."""
    resolved = defaults._asdict()
    for layer in (team, kpi):  # later layers override earlier ones
        if layer is not None:
            resolved.update(layer.model_dump(exclude_none=True))
    return ReminderPolicy(**resolved)


def first_due(policy: ReminderPolicy) -> timedelta:
    """How long after an episode starts its first reminder comes: the first gap (capped)."""
    return min(policy.first, policy.max)


def reminders_due(policy: ReminderPolicy, elapsed: timedelta) -> int:
    """How many reminders have come due ``elapsed`` after the episode started.

    The backoff schedule itself: reminder ``n`` is due at the sum of the first
    ``n`` gaps, gap 1 being ``first`` and each next one ``factor`` times the last,
    capped at ``max``. Once a gap reaches the cap the rest is counted by division,
    so a months-long episode costs no more than a young one.
    """
    count, offset, gap = 0, timedelta(0), first_due(policy)
    while gap < policy.max:
        if offset + gap > elapsed:
            return count
        offset, count = offset + gap, count + 1
        grown = min(gap * policy.factor, policy.max)
        if grown == gap:  # a factor too close to 1 to move a microsecond: the gap stays
            break
        gap = grown
    if elapsed < offset:
        return count
    return count + (elapsed - offset) // gap


def reminder_tick(
    policy: ReminderPolicy, state: KpiState, acked: bool, now: datetime
) -> tuple[KpiState, tuple[Event, ...]]:
    """Emit the ``reminder`` due for the state's episode, if one is.

    None for a status without reminders (green, unknown, yellow unless opted in),
    for an acknowledged episode, or before the next reminder's time. The event's
    key names the KPI, episode and reminder number: a retried tick or a second
    replica stores it once.
    """
    if acked or not policy.reminds(state.status):
        return state, ()
    number = reminders_due(policy, now - state.since)
    if number <= state.reminders_sent:
        return state, ()
    since = state.since.isoformat()
    event = Event(
        kind=EventKind.REMINDER,
        key=f"{state.kpi_id}:reminder:{since}:{number}",
        at=now,
        kpi_id=state.kpi_id,
        data={
            "since": since,  # the episode it belongs to: Slack replies in its thread
            "number": number,
            "status": state.status.value,
            "value": state.value,
            "reasons": list(state.reasons),
        },
    )
    return state._replace(reminders_sent=number), (event,)
