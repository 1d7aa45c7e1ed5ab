from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from kpiwatch.evaluation.comparisons import change_vs, comparison_start
from kpiwatch.evaluation.periods import parse_plan_key
from kpiwatch.model import Finding, Observation, Period, Status, Versus

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
Y = Status.YELLOW
PREV = Versus.PREVIOUS_PERIOD
LAST_YEAR = Versus.SAME_PERIOD_LAST_YEAR


def start(key: str, period: Period, tz: ZoneInfo = BERLIN) -> datetime:
    return parse_plan_key(key, period, tz)


def periods(period: Period, values: dict[str, float], tz: ZoneInfo = BERLIN) -> list[Observation]:
    """Per-period observations (bucket()'s shape) from plan keys, ascending."""
    rows = [Observation("revenue", start(k, period, tz), v) for k, v in values.items()]
    return sorted(rows, key=lambda o: o.observed_at)


def judge(
    rows: Sequence[Observation],
    key: str,
    value: float,
    vs: Versus,
    period: Period = Period.MONTH,
    *,
    max_pct: float | None = 10,
    max_abs: float | None = None,
    lower: bool = False,
    unit: str = "$",
    tz: ZoneInfo = BERLIN,
) -> Finding | None:
    return change_vs(
        rows, start(key, period, tz), value, vs, period, tz, max_pct, max_abs, lower, Y, unit
    )


# ---------------------------------------------------------------- months


def test_down_vs_the_same_month_last_year() -> None:
    rows = periods(Period.MONTH, {"2025-11": 1_310_000, "2026-10": 1_000_000, "2026-11": 1_152_800})
    assert judge(rows, "2026-11", 1_152_800, LAST_YEAR) == Finding(
        "change", Y, "down 12 % vs Nov 2025 (1,310,000 $), more than 10 %"
    )


def test_vs_the_previous_month() -> None:
    rows = periods(Period.MONTH, {"2026-10": 1_400_000, "2026-11": 1_152_800})
    assert judge(rows, "2026-11", 1_152_800, PREV) == Finding(
        "change", Y, "down 18 % vs Oct 2026 (1,400,000 $), more than 10 %"
    )
    # January's previous month is last December
    rows = periods(Period.MONTH, {"2025-12": 100, "2026-01": 95})
    finding = judge(rows, "2026-01", 80, PREV, unit="")
    assert finding == Finding("change", Y, "down 20 % vs Dec 2025 (100), more than 10 %")


def test_within_the_limit_or_better_is_silent() -> None:
    rows = periods(Period.MONTH, {"2026-10": 100})
    assert judge(rows, "2026-11", 90, PREV) is None  # exactly 10 %
    assert judge(rows, "2026-11", 89.9, PREV) is not None
    assert judge(rows, "2026-11", 500, PREV) is None  # better: higher is better


def test_lower_is_better_fires_up() -> None:
    rows = periods(Period.MONTH, {"2026-10": 4.0})
    assert judge(rows, "2026-11", 4.3, PREV, lower=True, max_pct=5, unit="%") == Finding(
        "change", Y, "up 7.5 % vs Oct 2026 (4 %), more than 5 %"
    )
    assert judge(rows, "2026-11", 3.0, PREV, lower=True, unit="%") is None


def test_max_abs_in_the_unit() -> None:
    rows = periods(Period.MONTH, {"2025-11": 1_310_000})
    finding = judge(rows, "2026-11", 1_152_800, LAST_YEAR, max_pct=None, max_abs=100_000)
    assert finding == Finding(
        "change", Y, "down 157,200 $ vs Nov 2025 (1,310,000 $), more than 100,000 $"
    )
    assert judge(rows, "2026-11", 1_210_000, LAST_YEAR, max_pct=None, max_abs=100_000) is None


def test_max_pct_relative_to_abs_old_and_an_old_zero_is_skipped() -> None:
    rows = periods(Period.MONTH, {"2026-09": -100, "2026-10": 0})
    finding = judge(rows, "2026-10", -150, PREV, unit="")
    assert finding == Finding("change", Y, "down 50 % vs Sep 2026 (-100), more than 10 %")
    assert judge(rows, "2026-11", -10, PREV) is None  # old value 0
    assert judge(rows, "2026-11", -10, PREV, max_pct=None, max_abs=5) is not None


def test_a_projected_value_is_judged_like_any_other() -> None:
    rows = periods(Period.MONTH, {"2026-10": 1000, "2026-11": 100})  # November so far
    assert judge(rows, "2026-11", 300, PREV) is not None  # on pace for 300
    assert judge(rows, "2026-11", 950, PREV) is None


# ---------------------------------------------------------------- missing


def test_a_missing_comparison_period_is_silent() -> None:
    rows = periods(Period.MONTH, {"2026-09": 1000, "2026-11": 10})  # no October
    assert judge(rows, "2026-11", 10, PREV) is None
    assert judge(rows, "2026-11", 10, LAST_YEAR) is None
    assert judge([], "2026-11", 10, PREV) is None


def test_the_comparison_period_must_match_exactly() -> None:
    october = start("2026-10", Period.MONTH)
    rows = [Observation("revenue", october + timedelta(hours=1), 1000)]
    assert judge(rows, "2026-11", 10, PREV) is None


def test_of_several_rows_at_the_start_the_last_counts() -> None:
    october = start("2026-10", Period.MONTH)
    rows = [Observation("revenue", october, 10), Observation("revenue", october, 1000)]
    assert judge(rows, "2026-11", 500, PREV) is not None


# ---------------------------------------------------------------- quarters, weeks, days


def test_quarters() -> None:
    rows = periods(Period.QUARTER, {"2026-Q1": 500, "2026-Q4": 1000, "2027-Q1": 700})
    assert judge(rows, "2027-Q1", 700, PREV, Period.QUARTER) == Finding(
        "change", Y, "down 30 % vs Q4 2026 (1000 $), more than 10 %"
    )
    assert judge(rows, "2027-Q1", 400, LAST_YEAR, Period.QUARTER) == Finding(
        "change", Y, "down 20 % vs Q1 2026 (500 $), more than 10 %"
    )


def test_an_ordinary_week_vs_the_same_iso_week_last_year() -> None:
    assert comparison_start(start("2026-W45", Period.WEEK), LAST_YEAR, Period.WEEK, BERLIN) == (
        start("2025-W45", Period.WEEK)
    )
    rows = periods(Period.WEEK, {"2025-W45": 200, "2026-W44": 150})
    assert judge(rows, "2026-W45", 100, LAST_YEAR, Period.WEEK, unit="") == Finding(
        "change", Y, "down 50 % vs week of 2025-11-03 (200), more than 10 %"
    )
    assert judge(rows, "2026-W45", 100, PREV, Period.WEEK, unit="") == Finding(
        "change", Y, "down 33 % vs week of 2026-10-26 (150), more than 10 %"
    )


def test_week_53_vs_last_year_is_52_weeks_back_when_that_year_had_no_week_53() -> None:
    judged = start("2026-W53", Period.WEEK)  # Monday 28 Dec 2026; 2025 had 52 weeks
    compared = comparison_start(judged, LAST_YEAR, Period.WEEK, BERLIN)
    assert compared == judged - timedelta(days=364) == start("2026-W01", Period.WEEK)
    rows = periods(Period.WEEK, {"2026-W01": 80})
    assert judge(rows, "2026-W53", 60, LAST_YEAR, Period.WEEK, unit="") == Finding(
        "change", Y, "down 25 % vs week of 2025-12-29 (80), more than 10 %"
    )
    # the week after: 2027-W01 vs 2026-W01 (the same week as above, by number)
    assert comparison_start(
        start("2027-W01", Period.WEEK), LAST_YEAR, Period.WEEK, BERLIN
    ) == start("2026-W01", Period.WEEK)


def test_feb_29_is_compared_with_feb_28() -> None:
    leap_day = start("2028-02-29", Period.DAY)
    assert comparison_start(leap_day, LAST_YEAR, Period.DAY, BERLIN) == start(
        "2027-02-28", Period.DAY
    )
    rows = periods(Period.DAY, {"2027-02-28": 100, "2027-03-01": 1})
    assert judge(rows, "2028-02-29", 50, LAST_YEAR, Period.DAY, unit="") == Finding(
        "change", Y, "down 50 % vs 2027-02-28 (100), more than 10 %"
    )
    assert comparison_start(
        start("2028-03-01", Period.DAY), LAST_YEAR, Period.DAY, BERLIN
    ) == start("2027-03-01", Period.DAY)


def test_a_day_in_summer_time_vs_one_in_winter_time() -> None:
    # 26 Oct 2026 starts at 23:00 UTC (CET), 25 Oct at 22:00 UTC (CEST): exact local midnights
    assert comparison_start(start("2026-10-26", Period.DAY), PREV, Period.DAY, BERLIN) == (
        datetime(2026, 10, 24, 22, tzinfo=UTC)
    )
    rows = periods(Period.DAY, {"2026-10-25": 100, "2025-10-26": 100})
    assert judge(rows, "2026-10-26", 50, PREV, Period.DAY) is not None
    assert judge(rows, "2026-10-26", 50, LAST_YEAR, Period.DAY) is not None


@pytest.mark.parametrize(
    ("period", "key", "vs", "expected"),
    [
        (Period.MONTH, "2026-03", PREV, "2026-02"),
        (Period.MONTH, "2026-03", LAST_YEAR, "2025-03"),
        (Period.QUARTER, "2026-Q1", PREV, "2025-Q4"),
        (Period.QUARTER, "2026-Q3", LAST_YEAR, "2025-Q3"),
        (Period.WEEK, "2026-W01", PREV, "2025-W52"),
        (Period.WEEK, "2027-W01", PREV, "2026-W53"),
        (Period.DAY, "2026-03-01", PREV, "2026-02-28"),
        (Period.DAY, "2028-03-01", PREV, "2028-02-29"),
        (Period.DAY, "2026-11-03", LAST_YEAR, "2025-11-03"),
    ],
)
@pytest.mark.parametrize("tz", [BERLIN, NEW_YORK])
def test_comparison_start(
    period: Period, key: str, vs: Versus, expected: str, tz: ZoneInfo
) -> None:
    assert comparison_start(start(key, period, tz), vs, period, tz) == start(expected, period, tz)
