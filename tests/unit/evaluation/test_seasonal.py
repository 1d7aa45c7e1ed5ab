from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from kpiwatch.evaluation.format import fmt_pct
from kpiwatch.evaluation.periods import bucket, period_start
from kpiwatch.evaluation.seasonal import seasonal, tolerance
from kpiwatch.model import Aggregate, Finding, Observation, Period, Status

BERLIN = ZoneInfo("Europe/Berlin")
UTC_ZONE = ZoneInfo("UTC")
R = Status.RED
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
WEEK = timedelta(days=7)
TUESDAY = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)  # 11:00 in Berlin


def weekly(back: Sequence[float], value: float, *, end: datetime = TUESDAY) -> list[Observation]:
    """``back`` are the values 4, 3, 2, 1 weeks before (oldest first), then the judged one."""
    n = len(back)
    return [Observation("rides", end - WEEK * (n - i), v) for i, v in enumerate(back)] + [
        Observation("rides", end, value)
    ]


def rule(
    history: Sequence[Observation],
    *,
    max_pct: float | None = 20,
    max_abs: float | None = None,
    lower: bool = False,
    unit: str = "rides",
    season: timedelta = WEEK,
    seasons: int = 4,
    tz: ZoneInfo = BERLIN,
    period: Period | None = None,
) -> Finding | None:
    return seasonal(history, season, seasons, max_pct, max_abs, lower, R, unit, tz, period=period)


# ---------------------------------------------------------------- firing


def test_fires_on_a_drop_below_the_usual_tuesday() -> None:
    history = weekly([19_000, 20_000, 19_000, 20_000], 12_400)
    assert rule(history) == Finding(
        "seasonal", R, "12,400 rides, 36 % below the usual Tuesday (19,500, median of 4)"
    )


def test_a_small_drop_or_a_rise_does_not_fire_when_higher_is_better() -> None:
    assert rule(weekly([100, 100, 100, 100], 80)) is None  # exactly 20 %: not more
    assert rule(weekly([100, 100, 100, 100], 79.9)) is not None
    assert rule(weekly([100, 100, 100, 100], 300)) is None  # better: never fires


def test_lower_is_better_fires_above_the_usual_value() -> None:
    history = weekly([5, 5, 5, 5], 6)
    assert rule(history, lower=True, unit="%", max_pct=10) == Finding(
        "seasonal", R, "6 %, 20 % above the usual Tuesday (5, median of 4)"
    )
    assert rule(weekly([5, 5, 5, 5], 1), lower=True, unit="%", max_pct=10) is None


def test_below_ten_percent_one_decimal() -> None:
    finding = rule(weekly([100, 100, 100, 100], 91), max_pct=5, unit="")
    assert finding is not None
    assert finding.reason == "91, 9.0 % below the usual Tuesday (100, median of 4)"


def test_max_abs_words_the_difference_in_the_unit() -> None:
    history = weekly([14_700] * 4, 12_400)
    assert rule(history, max_pct=None, max_abs=2000) == Finding(
        "seasonal", R, "12,400 rides, 2300 rides below the usual Tuesday (14,700, median of 4)"
    )
    assert rule(history, max_pct=None, max_abs=2300) is None  # equal is fine
    assert rule(weekly([14_700] * 4, 17_000), max_pct=None, max_abs=2000) is None  # better


def test_max_pct_is_relative_to_the_absolute_median() -> None:
    finding = rule(weekly([-10, -10, -10, -10], -15), max_pct=40, unit="")
    assert finding is not None
    assert finding.reason == "-15, 50 % below the usual Tuesday (-10, median of 4)"


def test_a_median_of_zero_is_skipped_for_max_pct_not_for_max_abs() -> None:
    history = weekly([0, 0, 5, -5], -50)
    assert rule(history) is None
    assert rule(history, max_pct=None, max_abs=10) is not None


def test_the_median_of_an_even_count_is_the_mean_of_the_middle_two() -> None:
    finding = rule(weekly([10, 20, 30, 100], 5), unit="")
    assert finding is not None
    assert finding.reason == "5, 80 % below the usual Tuesday (25, median of 4)"


def test_one_holiday_among_the_seasons_does_not_move_the_baseline() -> None:
    assert rule(weekly([100, 5, 100, 100], 100)) is None
    assert rule(weekly([100, 100, 100, 100, 5], 100), seasons=5) is None  # median 100


def test_a_single_season_says_what_it_compared_with() -> None:
    finding = rule(weekly([100], 50), seasons=1, unit="")
    assert finding is not None
    assert finding.reason == "50, 50 % below the usual Tuesday (100, 1 week back)"


def test_unequal_numbers_never_read_equal() -> None:
    finding = rule(weekly([5.5] * 4, 5.50001), lower=True, max_pct=0.0001, unit="")
    assert finding is not None
    assert finding.reason.startswith("5.50001, ")
    assert finding.reason.endswith("(5.5, median of 4)")


def test_empty_history_is_silent() -> None:
    assert rule([]) is None


# ---------------------------------------------------------------- not enough history


def test_not_enough_history_is_a_green_note() -> None:
    assert rule(weekly([100, 100], 10)) == Finding(
        "seasonal", Status.GREEN, "seasonal: not enough history (2 of 4 weeks)"
    )
    assert rule(weekly([], 10)) == Finding(
        "seasonal", Status.GREEN, "seasonal: not enough history (0 of 4 weeks)"
    )


@pytest.mark.parametrize(
    ("season", "seasons", "words"),
    [
        (DAY, 7, "0 of 7 days"),
        (timedelta(days=365), 2, "0 of 2 years"),
        (timedelta(weeks=52), 3, "0 of 3 years"),
        (timedelta(days=30), 3, "0 of 3 seasons"),
        (WEEK, 1, "0 of 1 week"),
        (HOUR, 1, "0 of 1 season"),
    ],
)
def test_not_enough_history_names_the_season(season: timedelta, seasons: int, words: str) -> None:
    finding = rule([Observation("rides", TUESDAY, 1)], season=season, seasons=seasons)
    assert finding == Finding("seasonal", Status.GREEN, f"seasonal: not enough history ({words})")


def test_a_missing_week_in_between_counts_as_missing() -> None:
    history = weekly([100, 100, 100, 100], 10)
    del history[1]  # three weeks back
    assert rule(history) == Finding(
        "seasonal", Status.GREEN, "seasonal: not enough history (3 of 4 weeks)"
    )


# ---------------------------------------------------------------- tolerance


def test_tolerance_is_an_eighth_of_the_season_at_most_three_hours() -> None:
    assert tolerance(WEEK) == 3 * HOUR
    assert tolerance(DAY) == 3 * HOUR
    assert tolerance(8 * HOUR) == HOUR


def test_a_point_one_day_off_is_not_accepted_for_a_weekly_season() -> None:
    daily = [Observation("rides", TUESDAY - DAY * i, 100) for i in range(29, 0, -1)]
    history = [o for o in daily if o.observed_at != TUESDAY - 2 * WEEK]  # no Tuesday 2 weeks back
    history.append(Observation("rides", TUESDAY, 10))
    # the Monday and Wednesday next to the missing Tuesday are there, and not used
    assert rule(history) == Finding(
        "seasonal", Status.GREEN, "seasonal: not enough history (3 of 4 weeks)"
    )


def test_a_point_within_three_hours_is_accepted_and_not_beyond() -> None:
    def history(offset: timedelta) -> list[Observation]:
        points = weekly([100, 100, 100], 10)
        return [Observation("rides", TUESDAY - 4 * WEEK + offset, 100), *points]

    assert rule(history(3 * HOUR)) is not None
    assert rule(history(-3 * HOUR)) is not None
    assert rule(history(3 * HOUR + timedelta(seconds=1))) == Finding(
        "seasonal", Status.GREEN, "seasonal: not enough history (3 of 4 weeks)"
    )


def test_the_nearest_point_within_the_tolerance_is_used() -> None:
    ideal = TUESDAY - WEEK
    history = [
        Observation("rides", TUESDAY - 4 * WEEK, 100),
        Observation("rides", TUESDAY - 3 * WEEK, 100),
        Observation("rides", TUESDAY - 2 * WEEK, 100),
        Observation("rides", ideal - 2 * HOUR, 1_000),  # farther
        Observation("rides", ideal + timedelta(minutes=30), 40),  # nearer: used
        Observation("rides", TUESDAY, 50),
    ]
    finding = rule(history, unit="")
    assert finding is not None
    assert finding.reason == "50, 50 % below the usual Tuesday (100, median of 4)"  # 40, 100 x3


def test_dst_shifted_daily_period_starts_are_still_matched() -> None:
    # daily periods in Berlin; summer time ended on 25 Oct 2026, so Tuesday 3 Nov
    # starts at 23:00 UTC and the Tuesdays two to four weeks before at 22:00 UTC
    first = date(2026, 10, 6)
    morning = datetime(2026, 10, 6, 9, tzinfo=UTC)
    raw = [Observation("rides", morning + DAY * i, 20_000.0) for i in range(28)]
    raw.append(Observation("rides", morning + DAY * 28, 12_400))  # Tuesday 3 Nov
    periods = bucket(raw, Period.DAY, BERLIN, Aggregate.SUM)
    assert periods[0].observed_at == period_start(raw[0].observed_at, Period.DAY, BERLIN)
    assert periods[0].observed_at.astimezone(BERLIN).date() == first
    assert periods[-1].observed_at - periods[-15].observed_at == 2 * WEEK + HOUR
    assert rule(periods, period=Period.DAY) == Finding(
        "seasonal", R, "12,400 rides, 38 % below the usual Tuesday (20,000, median of 4)"
    )


# ---------------------------------------------------------------- the baseline's name


def test_a_daily_season_names_the_local_time_of_day() -> None:
    judged = datetime(2026, 11, 24, 13, tzinfo=UTC)  # 14:00 in Berlin
    hourly = [Observation("rides", judged - HOUR * i, 100) for i in range(96, 0, -1)]
    history = [*hourly, Observation("rides", judged, 50)]
    finding = rule(history, season=DAY, seasons=3)
    assert finding is not None
    assert finding.reason == "50 rides, 50 % below the usual 14:00 (100, median of 3)"
    finding = rule(history, season=DAY, seasons=3, tz=UTC_ZONE)
    assert finding is not None
    assert "the usual 13:00 " in finding.reason


def test_the_weekday_is_local() -> None:
    late = datetime(2026, 11, 23, 23, 30, tzinfo=UTC)  # Monday in UTC, Tuesday in Berlin
    history = weekly([100] * 4, 50, end=late)
    assert "the usual Tuesday " in (rule(history) or Finding("", R, "")).reason
    assert "the usual Monday " in (rule(history, tz=UTC_ZONE) or Finding("", R, "")).reason


@pytest.mark.parametrize(
    ("season", "period", "baseline"),
    [
        (DAY, Period.DAY, "the usual day"),
        (WEEK, Period.DAY, "the usual Tuesday"),
        (WEEK, Period.WEEK, "the usual week"),
        (timedelta(weeks=52), Period.MONTH, "the usual month"),
        (timedelta(weeks=52), Period.QUARTER, "the usual quarter"),
        (timedelta(days=30), None, "the usual value"),
        (timedelta(weeks=52), None, "the usual value"),
    ],
)
def test_the_baseline_is_named_for_the_season_and_period(
    season: timedelta, period: Period | None, baseline: str
) -> None:
    history = [Observation("rides", TUESDAY - season * k, 100) for k in (2, 1)]
    history.append(Observation("rides", TUESDAY, 50))
    finding = rule(history, season=season, seasons=2, period=period, unit="")
    assert finding == Finding("seasonal", R, f"50, 50 % below {baseline} (100, median of 2)")


# ---------------------------------------------------------------- fmt_pct


@pytest.mark.parametrize(
    ("pct", "text"),
    [
        (36.4, "36 %"),
        (10.0, "10 %"),
        (9.96, "10 %"),
        (9.94, "9.9 %"),
        (9.0, "9.0 %"),
        (0.5, "0.5 %"),
        (1234.4, "1234 %"),
        (12_345.6, "12,346 %"),
        (-0.01, "0.0 %"),
    ],
)
def test_fmt_pct_whole_from_ten_one_decimal_below(pct: float, text: str) -> None:
    assert fmt_pct(pct) == text
