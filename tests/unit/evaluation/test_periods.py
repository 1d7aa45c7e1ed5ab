from __future__ import annotations

import random
import re
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kpiwatch.evaluation.periods import (
    Judged,
    bucket,
    is_closed,
    judged_period,
    parse_plan_key,
    period_end,
    period_label,
    period_start,
    plan_key,
    shift,
)
from kpiwatch.model import Aggregate, Observation, Period

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
UTC_ZONE = ZoneInfo("UTC")
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def local(
    tz: ZoneInfo, year: int, month: int, day: int, hour: int = 0, minute: int = 0
) -> datetime:
    """A local wall time in ``tz``, as the UTC instant it is."""
    return datetime(year, month, day, hour, minute, tzinfo=tz).astimezone(UTC)


def obs(at: datetime, value: float, kpi_id: str = "rides") -> Observation:
    return Observation(kpi_id, at, value)


def hourly(tz: ZoneInfo, first: date, days: int, value: float = 1.0) -> list[Observation]:
    """One row per real hour from local midnight of ``first`` for ``days`` local days."""
    start = local(tz, first.year, first.month, first.day)
    last = first + timedelta(days=days)
    end = local(tz, last.year, last.month, last.day)
    rows = []
    at = start
    while at < end:
        rows.append(obs(at, value))
        at += HOUR
    return rows


# ---------------------------------------------------------------- period_start, shift, end


@pytest.mark.parametrize(
    ("period", "expected"),
    [
        (Period.DAY, utc(2026, 11, 3, 23)),  # Wednesday 4 Nov, 00:00 CET
        (Period.WEEK, utc(2026, 11, 1, 23)),  # Monday 2 Nov
        (Period.MONTH, utc(2026, 10, 31, 23)),  # 1 Nov
        (Period.QUARTER, utc(2026, 9, 30, 22)),  # 1 Oct, still summer time (CEST)
    ],
)
def test_period_start_is_local_midnight_of_the_first_day_in_utc(
    period: Period, expected: datetime
) -> None:
    start = period_start(utc(2026, 11, 4, 10), period, BERLIN)
    assert start == expected
    assert start.utcoffset() == timedelta(0)
    assert start.astimezone(BERLIN).time() == time(0, 0)


def test_a_row_at_2330_utc_is_the_next_local_day_in_berlin_but_not_in_utc() -> None:
    late = utc(2026, 11, 2, 23, 30)  # Monday 23:30 UTC is Tuesday 00:30 in Berlin
    assert period_start(late, Period.DAY, BERLIN) == utc(2026, 11, 2, 23)
    assert period_start(late, Period.DAY, UTC_ZONE) == utc(2026, 11, 2)
    rows = [obs(utc(2026, 11, 2, 12), 5), obs(late, 7)]
    assert [o.value for o in bucket(rows, Period.DAY, UTC_ZONE, Aggregate.SUM)] == [12]
    assert [o.value for o in bucket(rows, Period.DAY, BERLIN, Aggregate.SUM)] == [5, 7]
    # ...and at a month's end it is next month's
    assert period_start(utc(2026, 11, 30, 23, 30), Period.MONTH, BERLIN) == utc(2026, 11, 30, 23)


def test_new_york_is_behind_utc() -> None:
    early = utc(2026, 11, 3, 3, 0)  # 22:00 on Monday 2 Nov in New York
    assert period_start(early, Period.DAY, NEW_YORK) == utc(2026, 11, 2, 5)
    assert period_start(utc(2026, 1, 1, 4), Period.QUARTER, NEW_YORK) == utc(2025, 10, 1, 4)


@pytest.mark.parametrize(
    ("tz", "day", "hours"),
    [
        (BERLIN, date(2026, 3, 29), 23),  # spring forward
        (BERLIN, date(2026, 10, 25), 25),  # fall back
        (BERLIN, date(2026, 3, 30), 24),
        (NEW_YORK, date(2026, 3, 8), 23),
        (NEW_YORK, date(2026, 11, 1), 25),
        (UTC_ZONE, date(2026, 3, 29), 24),
    ],
)
def test_a_local_day_may_be_23_or_25_hours(tz: ZoneInfo, day: date, hours: int) -> None:
    start = local(tz, day.year, day.month, day.day)
    assert period_start(start + HOUR * (hours - 1), Period.DAY, tz) == start
    end = period_end(start, Period.DAY, tz)
    assert end - start == HOUR * hours
    assert end.astimezone(tz).time() == time(0, 0)
    assert shift(end, Period.DAY, tz, -1) == start


@pytest.mark.parametrize(
    ("tz", "first", "counts"),
    [
        (BERLIN, date(2026, 3, 27), [24, 24, 23, 24]),
        (BERLIN, date(2026, 10, 23), [24, 24, 25, 24]),
        (NEW_YORK, date(2026, 3, 6), [24, 24, 23, 24]),
        (NEW_YORK, date(2026, 10, 30), [24, 24, 25, 24]),
    ],
)
def test_bucketing_hourly_rows_across_dst(tz: ZoneInfo, first: date, counts: list[int]) -> None:
    periods = bucket(hourly(tz, first, 4), Period.DAY, tz, Aggregate.COUNT)
    assert [o.value for o in periods] == counts
    assert [o.observed_at.astimezone(tz).date() for o in periods] == [
        first + DAY * i for i in range(4)
    ]
    assert all(o.observed_at.astimezone(tz).time() == time(0, 0) for o in periods)


def test_a_week_spanning_the_autumn_change_is_169_hours() -> None:
    start = local(BERLIN, 2026, 10, 19)
    assert period_end(start, Period.WEEK, BERLIN) - start == HOUR * 169
    week = bucket(hourly(BERLIN, date(2026, 10, 19), 7), Period.WEEK, BERLIN, Aggregate.COUNT)
    assert week == [obs(start, 169)]


def test_shift_across_the_spring_change_lands_on_local_midnight() -> None:
    start = local(BERLIN, 2026, 3, 1)
    assert shift(start, Period.DAY, BERLIN, 28) == local(BERLIN, 2026, 3, 29)
    assert shift(start, Period.DAY, BERLIN, 29) == local(BERLIN, 2026, 3, 30)
    assert shift(start, Period.DAY, BERLIN, 29) - shift(start, Period.DAY, BERLIN, 28) == 23 * HOUR
    assert shift(start, Period.MONTH, BERLIN, 1) == utc(2026, 3, 31, 22)  # 1 Apr, CEST
    assert shift(start, Period.WEEK, BERLIN, 5) == local(BERLIN, 2026, 3, 30)  # 1 Mar is Sunday


def test_shift_from_any_moment_of_a_period_and_by_zero() -> None:
    inside = utc(2026, 11, 18, 15, 45)
    assert shift(inside, Period.MONTH, BERLIN, 0) == period_start(inside, Period.MONTH, BERLIN)
    assert shift(inside, Period.MONTH, BERLIN, 1) == local(BERLIN, 2026, 12, 1)
    assert shift(inside, Period.WEEK, BERLIN, -1) == local(BERLIN, 2026, 11, 9)


@pytest.mark.parametrize(
    ("first", "n", "expected"),
    [
        (date(2026, 1, 1), 1, date(2026, 2, 1)),  # out of a 31-day month
        (date(2026, 2, 1), 1, date(2026, 3, 1)),  # Feb 2026: 28 days
        (date(2028, 2, 1), 1, date(2028, 3, 1)),  # Feb 2028: 29 days (leap year)
        (date(2026, 12, 1), 1, date(2027, 1, 1)),  # across the year
        (date(2026, 1, 1), -1, date(2025, 12, 1)),
        (date(2026, 3, 1), -13, date(2025, 2, 1)),
        (date(2026, 1, 1), 24, date(2028, 1, 1)),
    ],
)
def test_month_arithmetic(first: date, n: int, expected: date) -> None:
    start = local(BERLIN, first.year, first.month, first.day)
    assert shift(start, Period.MONTH, BERLIN, n) == local(
        BERLIN, expected.year, expected.month, expected.day
    )


def test_month_ends_jan_31_feb_28_and_feb_29() -> None:
    jan31 = local(BERLIN, 2026, 1, 31, 12)
    # "the month after Jan 31" is February, not "Feb 31" or March
    assert shift(jan31, Period.MONTH, BERLIN, 1) == local(BERLIN, 2026, 2, 1)
    feb = local(BERLIN, 2026, 2, 1)
    assert period_end(feb, Period.MONTH, BERLIN) - feb == 28 * DAY
    feb_leap = local(BERLIN, 2028, 2, 1)
    assert period_end(feb_leap, Period.MONTH, BERLIN) - feb_leap == 29 * DAY
    rows = [
        obs(local(BERLIN, 2028, 2, 29, 23, 59), 1),  # still February
        obs(local(BERLIN, 2028, 3, 1), 2),  # March
        obs(local(BERLIN, 2026, 2, 28, 23, 59), 4),  # February 2026
        obs(local(BERLIN, 2026, 3, 1), 8),
    ]
    months = bucket(rows, Period.MONTH, BERLIN, Aggregate.SUM)
    assert [(plan_key(o.observed_at, Period.MONTH, BERLIN), o.value) for o in months] == [
        ("2026-02", 4),
        ("2026-03", 8),
        ("2028-02", 1),
        ("2028-03", 2),
    ]


def test_quarter_ends() -> None:
    rows = [
        obs(local(BERLIN, 2026, 3, 31, 23, 59), 1),
        obs(local(BERLIN, 2026, 4, 1), 2),
        obs(local(BERLIN, 2026, 9, 30, 23), 4),
        obs(local(BERLIN, 2026, 12, 31, 23, 59), 8),
        obs(local(BERLIN, 2027, 1, 1), 16),
    ]
    quarters = bucket(rows, Period.QUARTER, BERLIN, Aggregate.SUM)
    assert [(period_label(o.observed_at, Period.QUARTER, BERLIN), o.value) for o in quarters] == [
        ("Q1 2026", 1),
        ("Q2 2026", 2),
        ("Q3 2026", 4),
        ("Q4 2026", 8),
        ("Q1 2027", 16),
    ]
    q4 = local(BERLIN, 2026, 10, 1)
    assert period_end(q4, Period.QUARTER, BERLIN) == local(BERLIN, 2027, 1, 1)
    assert shift(local(BERLIN, 2026, 1, 1), Period.QUARTER, BERLIN, -1) == local(
        BERLIN, 2025, 10, 1
    )


def test_weeks_start_on_monday() -> None:
    sunday_night = local(BERLIN, 2026, 11, 8, 23, 59)
    monday = local(BERLIN, 2026, 11, 9)
    assert period_start(sunday_night, Period.WEEK, BERLIN) == local(BERLIN, 2026, 11, 2)
    assert period_start(monday, Period.WEEK, BERLIN) == monday
    rows = [obs(sunday_night, 1), obs(monday, 2)]
    assert [o.value for o in bucket(rows, Period.WEEK, BERLIN, Aggregate.SUM)] == [1, 2]


def test_iso_week_53_of_2026() -> None:
    new_year = local(BERLIN, 2027, 1, 1, 12)  # a Friday: in the week of Monday 28 Dec 2026
    start = period_start(new_year, Period.WEEK, BERLIN)
    assert start == local(BERLIN, 2026, 12, 28)
    assert plan_key(start, Period.WEEK, BERLIN) == "2026-W53"
    assert period_label(start, Period.WEEK, BERLIN) == "week of 2026-12-28"
    assert period_label(start, Period.WEEK, BERLIN, short=True) == "W53"
    following = period_end(start, Period.WEEK, BERLIN)
    assert following == local(BERLIN, 2027, 1, 4)
    assert plan_key(following, Period.WEEK, BERLIN) == "2027-W01"
    assert parse_plan_key("2026-W53", Period.WEEK, BERLIN) == start


# ---------------------------------------------------------------- bucket


DAY_ROWS = [  # Tuesday 3 Nov 2026 in Berlin, deliberately not in time order
    obs(local(BERLIN, 2026, 11, 3, 18), 2.0),
    obs(local(BERLIN, 2026, 11, 3, 0), 3.0),
    obs(local(BERLIN, 2026, 11, 3, 23, 59), 4.0),
    obs(local(BERLIN, 2026, 11, 3, 9), 1.0),
]


@pytest.mark.parametrize(
    ("aggregate", "expected"),
    [
        (Aggregate.SUM, 10.0),
        (Aggregate.AVG, 2.5),
        (Aggregate.LAST, 4.0),  # the latest by time, not the last row given
        (Aggregate.MIN, 1.0),
        (Aggregate.MAX, 4.0),
        (Aggregate.COUNT, 4.0),
        (None, 4.0),  # several rows for one period: the latest wins
    ],
)
def test_each_aggregate_folds_one_period(aggregate: Aggregate | None, expected: float) -> None:
    assert bucket(DAY_ROWS, Period.DAY, BERLIN, aggregate) == [
        obs(local(BERLIN, 2026, 11, 3), expected)
    ]


def test_aggregate_none_puts_each_row_in_the_period_containing_it() -> None:
    rows = [
        obs(local(BERLIN, 2026, 11, 1), 100),  # a query's period_start
        obs(local(BERLIN, 2026, 12, 1), 90),
        obs(local(BERLIN, 2026, 11, 1, 6), 105),  # a later row for November: it wins
        obs(local(BERLIN, 2026, 10, 15), 80),  # mid-month: October's
    ]
    assert bucket(rows, Period.MONTH, BERLIN, None) == [
        obs(local(BERLIN, 2026, 10, 1), 80),
        obs(local(BERLIN, 2026, 11, 1), 105),
        obs(local(BERLIN, 2026, 12, 1), 90),
    ]


def test_rows_at_the_same_time_keep_their_order() -> None:
    at = local(BERLIN, 2026, 11, 3, 12)
    rows = [obs(at, 1), obs(at, 2)]
    assert bucket(rows, Period.DAY, BERLIN, None)[0].value == 2
    assert bucket(rows, Period.DAY, BERLIN, Aggregate.LAST)[0].value == 2
    assert bucket(rows[::-1], Period.DAY, BERLIN, Aggregate.LAST)[0].value == 1


def test_empty_periods_are_absent_and_the_result_is_ascending() -> None:
    rows = [
        obs(local(BERLIN, 2026, 11, 20, 8), 5),
        obs(local(BERLIN, 2026, 11, 3, 8), 7),
        obs(local(BERLIN, 2026, 11, 3, 9), 1),
    ]
    periods = bucket(rows, Period.DAY, BERLIN, Aggregate.SUM)
    assert periods == [obs(local(BERLIN, 2026, 11, 3), 8), obs(local(BERLIN, 2026, 11, 20), 5)]
    assert bucket([], Period.DAY, BERLIN, Aggregate.SUM) == []


def test_sum_is_exact_whatever_the_row_order() -> None:
    at = local(BERLIN, 2026, 11, 3, 12)
    rows = [obs(at, 1e16), obs(at, 1.0), obs(at, -1e16)]
    assert bucket(rows, Period.DAY, BERLIN, Aggregate.SUM)[0].value == 1.0
    assert bucket(rows, Period.DAY, BERLIN, Aggregate.AVG)[0].value == pytest.approx(1 / 3)


# ---------------------------------------------------------------- is_closed


def test_a_period_is_closed_exactly_at_its_end_plus_complete_after() -> None:
    start = local(BERLIN, 2026, 11, 3)
    end = local(BERLIN, 2026, 11, 4)
    assert not is_closed(start, Period.DAY, BERLIN, timedelta(0), end - timedelta(seconds=1))
    assert is_closed(start, Period.DAY, BERLIN, timedelta(0), end)
    late = timedelta(hours=6)
    assert not is_closed(start, Period.DAY, BERLIN, late, end + late - timedelta(microseconds=1))
    assert is_closed(start, Period.DAY, BERLIN, late, end + late)


def test_closing_uses_the_real_length_of_a_dst_day() -> None:
    start = local(BERLIN, 2026, 10, 25)  # 25 hours
    assert not is_closed(start, Period.DAY, BERLIN, timedelta(0), start + 24 * HOUR)
    assert is_closed(start, Period.DAY, BERLIN, timedelta(0), start + 25 * HOUR)


# ---------------------------------------------------------------- judged_period


def _months(*values: float) -> list[Observation]:
    """Monthly periods in Berlin from Sep 2026 on."""
    september = local(BERLIN, 2026, 9, 1)
    return [obs(shift(september, Period.MONTH, BERLIN, i), v) for i, v in enumerate(values)]


def test_judged_period_is_the_latest_closed_one() -> None:
    periods = _months(10, 20, 30)  # Sep, Oct, Nov (open)
    now = local(BERLIN, 2026, 11, 10)
    assert judged_period(
        periods, Period.MONTH, BERLIN, timedelta(0), now, current=False, aggregate=Aggregate.SUM
    ) == Judged(local(BERLIN, 2026, 10, 1), local(BERLIN, 2026, 11, 1), 20, 20, True, 1.0)


def test_a_period_within_complete_after_is_not_judged_yet() -> None:
    periods = _months(10, 20, 30)
    just_after = local(BERLIN, 2026, 11, 1, 3)  # October ended three hours ago
    judged = judged_period(
        periods, Period.MONTH, BERLIN, timedelta(hours=6), just_after,
        current=False, aggregate=None,
    )  # fmt: skip
    assert judged is not None
    assert judged.start == local(BERLIN, 2026, 9, 1)  # September, not half-loaded October
    at_boundary = local(BERLIN, 2026, 11, 1, 6)
    judged = judged_period(
        periods, Period.MONTH, BERLIN, timedelta(hours=6), at_boundary,
        current=False, aggregate=None,
    )  # fmt: skip
    assert judged is not None
    assert judged.start == local(BERLIN, 2026, 10, 1)


def test_no_closed_period_judges_nothing() -> None:
    periods = _months(10)  # September only
    now = local(BERLIN, 2026, 9, 20)
    for current in (False, True):
        judged = judged_period(
            [] if current else periods, Period.MONTH, BERLIN, timedelta(0), now,
            current=current, aggregate=Aggregate.SUM,
        )  # fmt: skip
        assert judged is None


@pytest.mark.parametrize("aggregate", [Aggregate.SUM, Aggregate.COUNT])
def test_current_running_totals_are_projected_to_the_period_end(aggregate: Aggregate) -> None:
    periods = _months(10, 20, 400)  # 400 by the morning of 11 Nov
    now = local(BERLIN, 2026, 11, 11)  # 10 of November's 30 days (no DST change in it)
    judged = judged_period(
        periods, Period.MONTH, BERLIN, timedelta(0), now, current=True, aggregate=aggregate
    )
    assert judged is not None
    assert judged.start == local(BERLIN, 2026, 11, 1)
    assert judged.end == local(BERLIN, 2026, 12, 1)
    assert judged.fraction == pytest.approx(1 / 3)
    assert judged.actual == 400
    assert judged.value == pytest.approx(1200)
    assert not judged.closed


@pytest.mark.parametrize(
    "aggregate", [Aggregate.AVG, Aggregate.LAST, Aggregate.MIN, Aggregate.MAX, None]
)
def test_current_other_aggregates_are_judged_as_they_are(aggregate: Aggregate | None) -> None:
    now = local(BERLIN, 2026, 11, 11)
    judged = judged_period(
        _months(10, 20, 4.5), Period.MONTH, BERLIN, timedelta(0), now,
        current=True, aggregate=aggregate,
    )  # fmt: skip
    assert judged is not None
    assert (judged.value, judged.actual, judged.closed) == (4.5, 4.5, False)
    assert judged.fraction == pytest.approx(1 / 3)


def test_current_fraction_uses_the_real_length_of_a_dst_day() -> None:
    start = local(BERLIN, 2026, 10, 25)  # 25 hours
    periods = [obs(start, 50)]
    judged = judged_period(
        periods, Period.DAY, BERLIN, timedelta(0), start + timedelta(hours=12.5),
        current=True, aggregate=Aggregate.SUM,
    )  # fmt: skip
    assert judged is not None
    assert judged.fraction == 0.5
    assert judged.value == 100


def test_current_judges_nothing_under_one_percent_of_the_period() -> None:
    start = local(BERLIN, 2026, 11, 3)  # a 24-hour day: 1 % is 14 min 24 s
    periods = [obs(start, 3)]

    def judge(elapsed: timedelta) -> Judged | None:
        return judged_period(
            periods, Period.DAY, BERLIN, timedelta(0), start + elapsed,
            current=True, aggregate=Aggregate.SUM,
        )  # fmt: skip

    assert judge(timedelta(0)) is None
    assert judge(timedelta(minutes=14, seconds=23)) is None
    at_one_percent = judge(timedelta(minutes=14, seconds=24))
    assert at_one_percent is not None
    assert at_one_percent.value == pytest.approx(300)


def test_current_without_a_value_for_the_open_period_is_none() -> None:
    now = local(BERLIN, 2026, 12, 10)
    judged = judged_period(
        _months(10, 20, 30), Period.MONTH, BERLIN, timedelta(0), now,
        current=True, aggregate=Aggregate.SUM,
    )  # fmt: skip
    assert judged is None  # November has a value, December (the open one) has none


# ---------------------------------------------------------------- labels and plan keys


@pytest.mark.parametrize(
    ("period", "long", "short"),
    [
        (Period.DAY, "2026-11-03", "3 Nov"),
        (Period.WEEK, "week of 2026-11-02", "W45"),
        (Period.MONTH, "Nov 2026", "Nov"),
        (Period.QUARTER, "Q4 2026", "Q4"),
    ],
)
def test_period_labels(period: Period, long: str, short: str) -> None:
    start = period_start(local(BERLIN, 2026, 11, 3, 12), period, BERLIN)
    assert period_label(start, period, BERLIN) == long
    assert period_label(start, period, BERLIN, short=True) == short


def test_labels_are_local_and_zero_padded_weeks() -> None:
    # 23:30 UTC on 31 Jan is already February in Berlin
    assert period_label(utc(2027, 1, 31, 23, 30), Period.MONTH, BERLIN) == "Feb 2027"
    assert period_label(utc(2027, 1, 31, 23, 30), Period.MONTH, UTC_ZONE) == "Jan 2027"
    assert period_label(local(BERLIN, 2027, 2, 1), Period.WEEK, BERLIN, short=True) == "W05"


@pytest.mark.parametrize(
    ("period", "moment", "key"),
    [
        (Period.DAY, (2026, 11, 3, 12), "2026-11-03"),
        (Period.DAY, (2028, 2, 29), "2028-02-29"),
        (Period.WEEK, (2026, 11, 3, 12), "2026-W45"),
        (Period.WEEK, (2027, 1, 3, 23), "2026-W53"),
        (Period.WEEK, (2024, 12, 31), "2025-W01"),  # the ISO year, not the calendar year
        (Period.WEEK, (2027, 2, 1), "2027-W05"),
        (Period.MONTH, (2026, 11, 30, 23, 59), "2026-11"),
        (Period.MONTH, (2026, 2, 1), "2026-02"),
        (Period.QUARTER, (2026, 11, 3), "2026-Q4"),
        (Period.QUARTER, (2026, 3, 31, 23), "2026-Q1"),
    ],
)
@pytest.mark.parametrize("tz", [BERLIN, NEW_YORK, UTC_ZONE])
def test_plan_keys_round_trip(
    period: Period, moment: tuple[int, ...], key: str, tz: ZoneInfo
) -> None:
    at = local(tz, *moment)
    assert plan_key(at, period, tz) == key
    start = parse_plan_key(key, period, tz)
    assert start == period_start(at, period, tz)
    assert plan_key(start, period, tz) == key


def test_every_week_of_two_years_round_trips() -> None:
    start = local(BERLIN, 2025, 12, 29)
    for _ in range(110):
        assert parse_plan_key(plan_key(start, Period.WEEK, BERLIN), Period.WEEK, BERLIN) == start
        start = shift(start, Period.WEEK, BERLIN, 1)


@pytest.mark.parametrize(
    ("key", "period", "message"),
    [
        ("2026-13", Period.MONTH, "plan key '2026-13' is not a month (YYYY-MM)"),
        ("2026-1", Period.MONTH, "plan key '2026-1' is not a month (YYYY-MM)"),
        ("2026-11-03", Period.MONTH, "plan key '2026-11-03' is not a month (YYYY-MM)"),
        ("2026-02-30", Period.DAY, "plan key '2026-02-30' is not a day (YYYY-MM-DD)"),
        ("2026-02-29", Period.DAY, "plan key '2026-02-29' is not a day (YYYY-MM-DD)"),
        ("20261103", Period.DAY, "plan key '20261103' is not a day (YYYY-MM-DD)"),
        ("2026-W5", Period.WEEK, "plan key '2026-W5' is not an ISO week (YYYY-Www)"),
        ("2026-w05", Period.WEEK, "plan key '2026-w05' is not an ISO week (YYYY-Www)"),
        ("2026-11", Period.WEEK, "plan key '2026-11' is not an ISO week (YYYY-Www)"),
        (
            "2025-W53",
            Period.WEEK,
            "plan key '2025-W53' is not an ISO week (YYYY-Www): 2025 has 52 ISO weeks",
        ),
        ("2026-Q5", Period.QUARTER, "plan key '2026-Q5' is not a quarter (YYYY-Qn)"),
        ("2026-Q0", Period.QUARTER, "plan key '2026-Q0' is not a quarter (YYYY-Qn)"),
        ("2026-4", Period.QUARTER, "plan key '2026-4' is not a quarter (YYYY-Qn)"),
        ("26-Q4", Period.QUARTER, "plan key '26-Q4' is not a quarter (YYYY-Qn)"),
        ("0000-01", Period.MONTH, "plan key '0000-01' is not a month (YYYY-MM)"),
        ("２０２６-11", Period.MONTH, "plan key '２０２６-11' is not a month (YYYY-MM)"),
        ("", Period.DAY, "plan key '' is not a day (YYYY-MM-DD)"),
    ],
)
def test_a_key_that_does_not_fit_the_period_is_a_clear_error(
    key: str, period: Period, message: str
) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        parse_plan_key(key, period, BERLIN)


def test_plan_key_of_year_one_east_of_utc_is_out_of_range() -> None:
    with pytest.raises(ValueError, match="out of range"):
        parse_plan_key("0001-01", Period.MONTH, BERLIN)


# ---------------------------------------------------------------- properties

zones = st.sampled_from([BERLIN, NEW_YORK, UTC_ZONE, ZoneInfo("Australia/Lord_Howe")])
values = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False)
_SPAN_US = 400 * 86_400 * 10**6  # how far outside the period the extra rows may fall


@settings(max_examples=150, deadline=None)
@given(
    tz=zones,
    period=st.sampled_from(list(Period)),
    aggregate=st.sampled_from([*Aggregate, None]),
    anchor=st.datetimes(
        min_value=datetime(2001, 1, 1), max_value=datetime(2099, 1, 1), timezones=st.just(UTC)
    ),
    inside=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), values), min_size=1, max_size=8),
    outside=st.lists(
        st.tuples(st.booleans(), st.integers(0, _SPAN_US), values), min_size=1, max_size=12
    ),
    rng=st.randoms(use_true_random=False),
)
def test_a_periods_value_never_depends_on_rows_outside_it(
    tz: ZoneInfo,
    period: Period,
    aggregate: Aggregate | None,
    anchor: datetime,
    inside: list[tuple[float, float]],
    outside: list[tuple[bool, int, float]],
    rng: random.Random,
) -> None:
    start = period_start(anchor, period, tz)
    end = period_end(start, period, tz)
    length_us = (end - start) // timedelta(microseconds=1)
    own = [
        obs(start + timedelta(microseconds=min(int(share * length_us), length_us - 1)), value)
        for share, value in inside
    ]
    assert all(start <= o.observed_at < end for o in own)
    others = [
        obs(end + timedelta(microseconds=us), value)
        if after
        else obs(start - timedelta(microseconds=us + 1), value)
        for after, us, value in outside
    ]
    # all rows, the outside ones at random places; the period's own rows keep their order
    mixed = list(own)
    for other in others:
        mixed.insert(rng.randint(0, len(mixed)), other)

    alone = bucket(own, period, tz, aggregate)
    assert len(alone) == 1
    assert alone[0].observed_at == start
    among = [o for o in bucket(mixed, period, tz, aggregate) if o.observed_at == start]
    assert among == alone
