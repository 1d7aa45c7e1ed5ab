from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from _evalkit import NOW, make_kpi, series

from kpiwatch.evaluation import evaluate, next_review, review_tick
from kpiwatch.model import EventKind, ReviewCadence, Status

UTC_TZ = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")
NINE = time(9, 0)
D, W, M, Q = (
    ReviewCadence.DAILY,
    ReviewCadence.WEEKLY,
    ReviewCadence.MONTHLY,
    ReviewCadence.QUARTERLY,
)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("cadence", "after", "expected"),
    [
        (D, utc(2026, 11, 23, 8, 0), utc(2026, 11, 23, 9, 0)),
        (D, utc(2026, 11, 23, 9, 0), utc(2026, 11, 24, 9, 0)),  # strictly after
        (D, utc(2026, 12, 31, 23, 0), utc(2027, 1, 1, 9, 0)),
        (W, utc(2026, 11, 25, 12, 0), utc(2026, 11, 30, 9, 0)),  # Wednesday -> Monday
        (W, utc(2026, 11, 23, 8, 59), utc(2026, 11, 23, 9, 0)),  # Monday morning
        (W, utc(2026, 11, 23, 9, 0), utc(2026, 11, 30, 9, 0)),
        (W, utc(2026, 11, 29, 23, 0), utc(2026, 11, 30, 9, 0)),  # Sunday night
        (M, utc(2026, 11, 23, 10, 0), utc(2026, 12, 1, 9, 0)),
        (M, utc(2026, 12, 15, 0, 0), utc(2027, 1, 1, 9, 0)),
        (M, utc(2026, 12, 1, 8, 0), utc(2026, 12, 1, 9, 0)),
        (Q, utc(2026, 11, 23, 10, 0), utc(2027, 1, 1, 9, 0)),
        (Q, utc(2026, 2, 10, 0, 0), utc(2026, 4, 1, 9, 0)),
        (Q, utc(2026, 4, 1, 9, 0), utc(2026, 7, 1, 9, 0)),
        (Q, utc(2026, 9, 30, 23, 0), utc(2026, 10, 1, 9, 0)),
    ],
)
def test_calendar_in_utc(cadence: ReviewCadence, after: datetime, expected: datetime) -> None:
    assert next_review(cadence, after, UTC_TZ, NINE) == expected


def test_daily_across_spring_forward_in_berlin() -> None:
    # 09:00 CET is 08:00 UTC; from Sunday 2026-03-29 on, 09:00 CEST is 07:00 UTC
    first = next_review(D, utc(2026, 3, 27, 12, 0), BERLIN, NINE)
    second = next_review(D, first, BERLIN, NINE)
    third = next_review(D, second, BERLIN, NINE)
    assert [first, second, third] == [
        utc(2026, 3, 28, 8, 0),
        utc(2026, 3, 29, 7, 0),
        utc(2026, 3, 30, 7, 0),
    ]
    assert all(m.astimezone(BERLIN).time() == NINE for m in (first, second, third))


def test_weekly_across_fall_back_in_berlin() -> None:
    # DST ends on Sunday 2026-10-25: Monday the 19th is CEST, the 26th CET
    assert next_review(W, utc(2026, 10, 19, 0, 0), BERLIN, NINE) == utc(2026, 10, 19, 7, 0)
    assert next_review(W, utc(2026, 10, 19, 7, 0), BERLIN, NINE) == utc(2026, 10, 26, 8, 0)


def test_review_time_and_local_day_boundary() -> None:
    # 23:30 UTC on Sunday 2026-11-29 is already Monday 00:30 in Berlin
    after = utc(2026, 11, 29, 23, 30)
    assert next_review(W, after, BERLIN, time(7, 30)) == utc(2026, 11, 30, 6, 30)
    # 23:30 UTC on 2026-11-30 is 00:30 on December 1st in Berlin, after 00:15: so January
    assert next_review(M, utc(2026, 11, 30, 23, 30), BERLIN, time(0, 15)) == utc(
        2026, 12, 31, 23, 15
    )


def test_a_review_time_that_does_not_exist_is_shifted_forward() -> None:
    # 02:30 does not exist in Berlin on 2026-03-29: it falls at 03:30 CEST (01:30 UTC)
    assert next_review(D, utc(2026, 3, 28, 12, 0), BERLIN, time(2, 30)) == utc(2026, 3, 29, 1, 30)


def test_after_in_any_timezone() -> None:
    after = datetime(2026, 11, 23, 9, 30, tzinfo=ZoneInfo("America/New_York"))  # 14:30 UTC
    assert next_review(D, after, UTC_TZ, NINE) == utc(2026, 11, 24, 9, 0)
    assert next_review(D, after, UTC_TZ, NINE).tzinfo is UTC


# ---------------------------------------------------------------- evaluate and review_tick


def test_first_evaluation_schedules_the_next_review() -> None:
    result = evaluate(make_kpi(review="weekly"), series([1.0]), None, NOW, tz=BERLIN)
    assert result.state.next_review == utc(2026, 11, 30, 8, 0)
    assert result.state.last_review is None


def test_kpi_review_time_overrides_the_argument() -> None:
    kpi = make_kpi(review="daily", review_time="07:15")
    result = evaluate(kpi, series([1.0]), None, NOW, review_time=time(18, 0))
    assert result.state.next_review == utc(2026, 11, 24, 7, 15)
    other = evaluate(make_kpi(review="daily"), series([1.0]), None, NOW, review_time=time(18, 0))
    assert other.state.next_review == utc(2026, 11, 23, 18, 0)


def test_unchanged_cadence_keeps_the_scheduled_review() -> None:
    kpi = make_kpi(review="weekly")
    first = evaluate(kpi, series([1.0]), None, NOW)
    later = evaluate(kpi, series([1.0]), first.state, NOW + timedelta(days=20))
    assert later.state.next_review == first.state.next_review  # review_tick moves it on


def test_review_tick_coalesces_missed_reviews() -> None:
    kpi = make_kpi(review="weekly", thresholds={"red": 5.5})
    state = evaluate(kpi, series([5.8]), None, NOW).state  # red, escalated -> weekly
    due = state.next_review
    assert due == utc(2026, 11, 30, 9, 0)
    three_weeks_on = NOW + timedelta(days=22)  # reviews of Nov 30, Dec 7 and Dec 14 missed
    ticked, events = review_tick(kpi, state, three_weeks_on, UTC_TZ, NINE)
    assert len(events) == 1
    (event,) = events
    assert event.kind is EventKind.REVIEW_DUE
    assert event.key == "churn:review_due:2026-11-30T09:00:00+00:00"
    assert event.at == three_weeks_on
    assert event.kpi_id == "churn"
    assert event.data["cadence"] == "weekly"
    assert event.data["escalated"] is True
    assert event.data["status"] == "red"
    assert event.data["value"] == 5.8
    assert event.data["reasons"] == ["value 5.8 % > red 5.5 %"]
    assert ticked.last_review == three_weeks_on
    assert ticked.next_review == utc(2026, 12, 21, 9, 0)
    assert ticked.status is Status.RED  # nothing else changes


def test_review_tick_not_due_changes_nothing() -> None:
    kpi = make_kpi(review="monthly")
    state = evaluate(kpi, series([1.0]), None, NOW).state
    assert review_tick(kpi, state, NOW + timedelta(days=1), UTC_TZ, NINE) == (state, ())


def test_review_tick_due_exactly_now() -> None:
    kpi = make_kpi(review="daily")
    state = evaluate(kpi, series([1.0]), None, NOW).state
    due = state.next_review
    assert due is not None
    ticked, events = review_tick(kpi, state, due, UTC_TZ, NINE)
    assert len(events) == 1
    assert ticked.next_review == due + timedelta(days=1)


def test_review_tick_schedules_a_missing_review_without_an_event() -> None:
    kpi = make_kpi(review="daily", review_time="06:00")
    state = evaluate(kpi, series([1.0]), None, NOW).state._replace(next_review=None)
    ticked, events = review_tick(kpi, state, NOW, UTC_TZ, NINE)
    assert events == ()
    assert ticked.next_review == utc(2026, 11, 24, 6, 0)
