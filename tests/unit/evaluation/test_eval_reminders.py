"""Reminders: the backoff schedule, the policy's layers, and the pure tick."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from _evalkit import make_kpi, series

from kpiwatch.config.rules import Reminders
from kpiwatch.evaluation import (
    DEFAULT_REMINDERS,
    ReminderPolicy,
    evaluate,
    reminder_policy,
    reminder_tick,
    reminders_due,
)
from kpiwatch.model import EventKind, KpiState, ReviewCadence, Status

DAY = timedelta(days=1)
START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def _state(status: Status = Status.RED, sent: int = 0, since: datetime = START) -> KpiState:
    return KpiState(
        kpi_id="churn", status=status, since=since, review=ReviewCadence.MONTHLY,
        value=6.2, reasons=("value 6.2 % > red 5.5 %",), reminders_sent=sent,
    )  # fmt: skip


def _times(policy: ReminderPolicy, count: int) -> list[timedelta]:
    """The offsets at which the count of due reminders goes up, hour by hour."""
    found, hour, seen = [], timedelta(hours=1), 0
    elapsed = timedelta(0)
    while len(found) < count:
        elapsed += hour
        due = reminders_due(policy, elapsed)
        assert due - seen in (0, 1)  # never two at once at this resolution
        if due > seen:
            found.append(elapsed)
            seen = due
    return found


def test_default_schedule_is_1d_3d_7d_then_every_7d() -> None:
    assert _times(DEFAULT_REMINDERS, 6) == [d * DAY for d in (1, 3, 7, 14, 21, 28)]


@pytest.mark.parametrize(
    ("policy", "days"),
    [
        (ReminderPolicy(first=DAY, factor=3, max=10 * DAY), (1, 4, 13, 23, 33)),  # 1, 3, 9, 10
        (ReminderPolicy(first=DAY, factor=1, max=7 * DAY), (1, 2, 3, 4, 5)),  # no backoff
        (ReminderPolicy(first=3 * DAY, factor=2, max=2 * DAY), (2, 4, 6, 8, 10)),  # first > max
        (ReminderPolicy(first=DAY, factor=1 + 1e-12, max=7 * DAY), (1, 2, 3, 4, 5)),  # rounds to 1
    ],
)
def test_factor_and_cap(policy: ReminderPolicy, days: tuple[int, ...]) -> None:
    assert _times(policy, len(days)) == [d * DAY for d in days]


def test_due_counts_boundaries_and_long_episodes() -> None:
    assert reminders_due(DEFAULT_REMINDERS, -DAY) == 0  # a clock behind the episode
    assert reminders_due(DEFAULT_REMINDERS, DAY - timedelta(microseconds=1)) == 0
    assert reminders_due(DEFAULT_REMINDERS, DAY) == 1
    assert reminders_due(DEFAULT_REMINDERS, 3 * DAY) == 2
    assert reminders_due(DEFAULT_REMINDERS, 7 * DAY + DAY * 7 * 1000) == 1003


def test_policy_layers_key_by_key_kpi_then_team_then_settings() -> None:
    defaults = ReminderPolicy(first=DAY, factor=2, max=7 * DAY, yellow=False)
    team = Reminders(first=2 * DAY, max=5 * DAY)
    kpi = Reminders(max=3 * DAY, yellow=True)
    assert reminder_policy(kpi, team, defaults) == ReminderPolicy(2 * DAY, 2, 3 * DAY, True)
    assert reminder_policy(None, team, defaults) == ReminderPolicy(2 * DAY, 2, 5 * DAY, False)
    assert reminder_policy(None, None, defaults) == defaults


def test_rule_keys_are_validated() -> None:
    assert Reminders.model_validate({"first": "12h", "factor": 1.5}).first == timedelta(hours=12)
    with pytest.raises(ValueError, match="at least 1m"):
        Reminders.model_validate({"first": "30s"})
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        Reminders.model_validate({"factor": 0.5})


def test_tick_emits_the_due_reminder_once_with_its_episode() -> None:
    now = START + DAY
    state, events = reminder_tick(DEFAULT_REMINDERS, _state(), False, now)
    [event] = events
    assert event.kind is EventKind.REMINDER
    assert event.key == f"churn:reminder:{START.isoformat()}:1"
    assert event.at == now
    assert dict(event.data) == {
        "since": START.isoformat(), "number": 1, "status": "red", "value": 6.2,
        "reasons": ["value 6.2 % > red 5.5 %"],
    }  # fmt: skip
    assert state.reminders_sent == 1
    assert reminder_tick(DEFAULT_REMINDERS, state, False, now + timedelta(hours=47)) == (state, ())


def test_tick_not_due_yet() -> None:
    state = _state()
    assert reminder_tick(DEFAULT_REMINDERS, state, False, START + DAY / 2) == (state, ())


def test_missed_reminders_coalesce_into_the_latest() -> None:
    state, [event] = reminder_tick(DEFAULT_REMINDERS, _state(), False, START + 8 * DAY)
    assert event.data["number"] == 3
    assert state.reminders_sent == 3


def test_an_acked_episode_gets_none() -> None:
    state = _state()
    assert reminder_tick(DEFAULT_REMINDERS, state, True, START + 30 * DAY) == (state, ())


@pytest.mark.parametrize("status", [Status.GREEN, Status.UNKNOWN, Status.YELLOW])
def test_only_red_by_default(status: Status) -> None:
    state = _state(status)
    assert reminder_tick(DEFAULT_REMINDERS, state, False, START + 30 * DAY) == (state, ())


def test_yellow_when_opted_in() -> None:
    policy = DEFAULT_REMINDERS._replace(yellow=True)
    _, [event] = reminder_tick(policy, _state(Status.YELLOW), False, START + DAY)
    assert event.data["status"] == "yellow"


def test_evaluate_keeps_the_count_within_an_episode_and_restarts_it_on_recovery() -> None:
    kpi = make_kpi(thresholds={"yellow": 4.5, "red": 5.5}, direction="lower_is_better")
    red = evaluate(kpi, series([6.2], end=START, step=DAY), None, START)
    reminded = red.state._replace(reminders_sent=2)
    still = evaluate(kpi, series([6.2, 6.3], end=START + DAY, step=DAY), reminded, START + DAY)
    assert still.state.since == red.state.since
    assert still.state.reminders_sent == 2
    later = START + 2 * DAY
    green = evaluate(kpi, series([6.2, 6.3, 3.0], end=later, step=DAY), still.state, later)
    assert green.state.status is Status.GREEN
    assert green.state.reminders_sent == 0
