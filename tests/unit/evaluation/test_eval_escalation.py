from __future__ import annotations

from datetime import UTC, datetime, timedelta

from _evalkit import NOW, make_kpi, run

from kpiwatch.evaluation.escalation import more_frequent
from kpiwatch.model import EventKind, ReviewCadence, Status

LOWER = {"yellow": 4.5, "red": 5.5}
DAY = timedelta(days=1)
RED, YELLOW, GREEN = 6.0, 5.0, 3.0


def kinds(events: tuple[object, ...]) -> list[EventKind]:
    return [e.kind for e in events]  # type: ignore[attr-defined]


def test_more_frequent() -> None:
    assert more_frequent(ReviewCadence.WEEKLY, ReviewCadence.MONTHLY) is ReviewCadence.WEEKLY
    assert more_frequent(ReviewCadence.WEEKLY, ReviewCadence.DAILY) is ReviewCadence.DAILY


def test_turning_red_escalates_to_the_escalation_cadence() -> None:
    kpi = make_kpi(thresholds=LOWER, review="monthly")
    green, red = run(kpi, [GREEN, RED], step=DAY)
    assert green.state.review is ReviewCadence.MONTHLY
    assert green.state.next_review == datetime(2026, 12, 1, 9, tzinfo=UTC)
    assert kinds(red.events) == [EventKind.STATUS_CHANGED, EventKind.ESCALATED]
    escalated = red.events[1]
    assert escalated.key == "churn:escalated:2026-11-24T10:00:00+00:00"
    assert escalated.data["review"] == "weekly"
    assert escalated.data["from_review"] == "monthly"
    assert red.state.review is ReviewCadence.WEEKLY
    assert red.state.escalated_since == NOW + DAY
    # the cadence changed, so the next review is recomputed: next Monday 09:00
    assert red.state.next_review == datetime(2026, 11, 30, 9, tzinfo=UTC)


def test_escalation_never_makes_reviews_less_frequent() -> None:
    kpi = make_kpi(thresholds=LOWER, review="daily", escalation={"review": "monthly"})
    (red,) = run(kpi, [RED])
    assert red.state.review is ReviewCadence.DAILY
    assert red.state.escalated_since == NOW
    assert kinds(red.events) == [EventKind.STATUS_CHANGED, EventKind.ESCALATED]


def test_already_escalated_does_not_escalate_again() -> None:
    kpi = make_kpi(thresholds=LOWER)
    results = run(kpi, [RED, YELLOW, RED, RED], step=DAY)
    assert [kinds(r.events) for r in results] == [
        [EventKind.STATUS_CHANGED, EventKind.ESCALATED],
        [EventKind.STATUS_CHANGED],
        [EventKind.STATUS_CHANGED],
        [],
    ]
    assert all(r.state.escalated_since == NOW for r in results)
    assert all(r.state.review is ReviewCadence.WEEKLY for r in results)


def test_de_escalation_after_stable_green_duration() -> None:
    kpi = make_kpi(thresholds=LOWER, review="monthly", escalation={"stable_for": "14d"})
    results = run(kpi, [RED] + [GREEN] * 16, step=DAY)
    green_from = NOW + DAY
    assert results[1].state.green_since == green_from
    # 13 days of green: still escalated; 14 days: back to the KPI's own cadence
    assert results[14].state.escalated_since == NOW
    assert results[14].state.green_count == 14
    de = results[15]
    assert kinds(de.events) == [EventKind.DE_ESCALATED]
    assert de.events[0].key == f"churn:de_escalated:{(NOW + 15 * DAY).isoformat()}"
    assert de.events[0].data["review"] == "monthly"
    assert de.events[0].data["from_review"] == "weekly"
    # what the KPI was then, for a message delivered after it changed again
    assert de.events[0].data["status"] == "green"
    assert de.events[0].data["value"] == GREEN
    assert de.events[0].data["reasons"] == list(de.state.reasons)
    assert de.events[0].data["since"] == green_from.isoformat()
    # the recovery names the red episode it closed (its Slack thread)
    [recovery] = results[1].events
    assert recovery.data["previous_since"] == NOW.isoformat()
    assert de.state.escalated_since is None
    assert de.state.review is ReviewCadence.MONTHLY
    assert de.state.next_review == datetime(2027, 1, 1, 9, tzinfo=UTC)  # now is 2026-12-08
    assert results[16].events == ()


def test_de_escalation_after_a_count_of_green_evaluations() -> None:
    kpi = make_kpi(thresholds=LOWER, escalation={"stable_for": 3})
    results = run(kpi, [RED, GREEN, GREEN, GREEN])
    assert [r.state.green_count for r in results] == [0, 1, 2, 3]
    assert [r.state.escalated for r in results] == [True, True, True, False]
    assert kinds(results[3].events) == [EventKind.DE_ESCALATED]


def test_yellow_breaks_the_green_run_but_does_not_end_escalation() -> None:
    kpi = make_kpi(thresholds=LOWER, escalation={"stable_for": 3})
    results = run(kpi, [RED, GREEN, GREEN, YELLOW, GREEN, GREEN, GREEN])
    assert [r.state.green_count for r in results] == [0, 1, 2, 0, 1, 2, 3]
    assert [r.state.escalated for r in results] == [True] * 6 + [False]
    assert results[3].state.green_since is None
    assert results[4].state.green_since == NOW + 4 * timedelta(hours=1)
    assert results[3].state.review is ReviewCadence.WEEKLY


def test_unknown_breaks_the_green_run_too() -> None:
    kpi = make_kpi(thresholds=LOWER, escalation={"stable_for": 2})
    results = run(kpi, [RED, GREEN, None, GREEN, GREEN])
    assert results[2].status is Status.UNKNOWN
    assert [r.state.escalated for r in results] == [True, True, True, True, False]


def test_green_run_counts_the_effective_status_after_hysteresis() -> None:
    kpi = make_kpi(thresholds=LOWER, for_=2, escalation={"stable_for": 2})
    results = run(kpi, [RED, GREEN, GREEN, GREEN])
    assert [r.status for r in results] == [
        Status.RED,
        Status.RED,  # the first green is pending (for: 2)
        Status.GREEN,
        Status.GREEN,
    ]
    assert [r.state.green_count for r in results] == [0, 0, 1, 2]
    assert kinds(results[3].events) == [EventKind.DE_ESCALATED]
