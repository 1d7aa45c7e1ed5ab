"""notify/facts.py: a message reports its event as it happened, and what changed since."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from kpiwatch.model import (
    DeliveryState,
    Event,
    EventKind,
    KpiState,
    OutboxMessage,
    ReviewCadence,
    Status,
)
from kpiwatch.notify.facts import Facts, closed_episode, facts, since_then, state_now
from kpiwatch.notify.notice import Notice

T0 = datetime(2026, 3, 2, 8, tzinfo=UTC)
HOUR = timedelta(hours=1)


def notice(kind: EventKind, at: datetime, data: dict[str, Any], state: KpiState) -> Notice:
    event = Event(kind=kind, key=f"churn:{kind}:{at}", at=at, kpi_id="churn", data=data)
    message = OutboxMessage(1, event, "slack", "#kpis", DeliveryState.PENDING, 0, at, at)
    return Notice(message, None, None, state, (), (), None, "https://k.example/")


def red_state(since: datetime, value: float = 6.2) -> KpiState:
    return KpiState("churn", Status.RED, since, ReviewCadence.WEEKLY, value=value,
                    reasons=(f"value {value:g} % > red 5.5 %",))  # fmt: skip


def green_state(since: datetime, value: float = 3.8) -> KpiState:
    return KpiState("churn", Status.GREEN, since, ReviewCadence.WEEKLY, value=value,
                    reasons=(f"value {value:g} % within thresholds",))  # fmt: skip


RED_CHANGE = {"from": "green", "to": "red", "value": 6.2, "unit": "%",
              "reasons": ["value 6.2 % > red 5.5 %"], "previous_since": None}  # fmt: skip


def test_on_time_the_message_is_the_state_and_nothing_is_added() -> None:
    sent = notice(EventKind.STATUS_CHANGED, T0, RED_CHANGE, red_state(T0))
    assert facts(sent) == Facts("red", 6.2, ("value 6.2 % > red 5.5 %",), T0)
    assert since_then(sent, "%") == []
    assert state_now(sent) == sent.state


def test_late_after_the_recovery_it_still_says_red_and_adds_now_and_resolved() -> None:
    late = notice(EventKind.STATUS_CHANGED, T0, RED_CHANGE, green_state(T0 + 3 * HOUR))
    assert facts(late) == Facts("red", 6.2, ("value 6.2 % > red 5.5 %",), T0)
    assert since_then(late, "%") == [
        "now: green 3.8 % (value 3.8 % within thresholds)",
        "resolved since 2026-03-02 11:00 UTC",
    ]
    assert state_now(late) is None  # its review schedule is another episode's


def test_a_late_de_escalation_stays_green_when_the_kpi_is_red_again() -> None:
    data = {"since": T0.isoformat(), "review": "monthly", "from_review": "weekly",
            "status": "green", "value": 3.7, "reasons": ["value 3.7 % within thresholds"]}
    late = notice(EventKind.DE_ESCALATED, T0 + 2 * HOUR, data, red_state(T0 + 3 * HOUR, 6.4))
    assert facts(late) == Facts("green", 3.7, ("value 3.7 % within thresholds",), T0)
    assert since_then(late, "%") == ["now: red 6.4 % (value 6.4 % > red 5.5 %)"]


def test_older_rows_borrow_the_state_only_while_it_is_their_episode() -> None:
    old = {"review": "monthly", "from_review": "weekly", "since": T0.isoformat()}
    same = notice(EventKind.DE_ESCALATED, T0 + HOUR, old, green_state(T0))
    assert facts(same) == Facts("green", 3.8, ("value 3.8 % within thresholds",), T0)
    later = notice(EventKind.DE_ESCALATED, T0 + HOUR, old, red_state(T0 + 2 * HOUR))
    assert facts(later) == Facts("green", None, (), T0)  # never the red of now


def test_closed_episode_is_the_one_a_change_from_non_green_ends() -> None:
    def change(was: str | None, previous: str | None) -> Event:
        data = {"from": was, "to": "green", "previous_since": previous}
        return Event(EventKind.STATUS_CHANGED, "k", T0, "churn", data=data)

    assert closed_episode(change("red", (T0 - HOUR).isoformat())) == T0 - HOUR
    assert closed_episode(change("green", (T0 - HOUR).isoformat())) is None
    assert closed_episode(change(None, None)) is None
    assert closed_episode(change("red", None)) is None  # recorded before the field existed
