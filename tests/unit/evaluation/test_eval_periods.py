"""KPIs judged the way owners review them (SPEC §2a): evaluate() on period KPIs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from _evalkit import make_kpi
from hypothesis import given, settings
from hypothesis import strategies as st

from kpiwatch.evaluation import evaluate
from kpiwatch.evaluation.judging import resolved_thresholds
from kpiwatch.evaluation.restatements import restated_points, restatements
from kpiwatch.model import EventKind, Observation, Status

UTC_TZ = ZoneInfo("UTC")
DAY = timedelta(days=1)


def _orders(start: datetime, days: int, per_day: float) -> list[Observation]:
    """One raw order row a day (at noon) from ``start``."""
    return [Observation("revenue", start + i * DAY + timedelta(hours=12), per_day)
            for i in range(days)]  # fmt: skip


REVENUE = {
    "id": "revenue", "direction": "higher_is_better", "unit": "$", "period": "month",
    "aggregate": "sum", "complete_after": "2d",
    "target": {"plan": {"2026-10": 31000, "2026-11": 33000, "2026-12": 40000}},
    "thresholds": {"yellow": "95%", "red": "90%"},
}  # fmt: skip
OCT = datetime(2026, 10, 1, tzinfo=UTC)
NOV = datetime(2026, 11, 1, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)


def test_the_last_closed_period_is_judged_against_its_plan_not_the_partial_month() -> None:
    kpi = make_kpi(**REVENUE)
    history = _orders(OCT, 31, 1000) + _orders(NOV, 30, 1000) + _orders(DEC, 2, 50)
    # 2 Dec: November ended yesterday, complete_after 2d: October is the last closed month
    early = evaluate(kpi, history, None, DEC + DAY, tz=UTC_TZ)
    assert early.observed_at == OCT
    assert (early.value, early.state.plan) == (31000, 31000)
    assert early.status is Status.GREEN
    assert early.reasons == ("Oct 2026: value 31,000 $ within thresholds (plan 31,000 $)",)
    # 3 Dec: November closed: 30,000 of 33,000 planned is 90.9 %: yellow (< 95 %)
    later = evaluate(kpi, history, early.state, DEC + 2 * DAY, tz=UTC_TZ)
    assert later.observed_at == NOV
    assert (later.value, later.state.plan) == (30000, 33000)
    assert later.status is Status.YELLOW
    assert later.reasons[0].startswith("Nov 2026: value 30,000 $ < yellow 31,350 $")
    # the 100 $ of December so far play no part: a partial month is not a month
    assert [o.observed_at for o in history if o.observed_at >= DEC] != []


def test_judge_current_projects_the_open_month_on_pace() -> None:
    current = {k: v for k, v in REVENUE.items() if k != "complete_after"}
    kpi = make_kpi(**{**current, "judge": "current"})
    history = _orders(NOV, 15, 1000)
    mid = NOV + 15 * DAY  # half of November gone, 15,000 $ so far
    result = evaluate(kpi, history, None, mid, tz=UTC_TZ)
    assert result.value == pytest.approx(30000)
    assert result.status is Status.YELLOW  # 30,000 on pace vs 33,000 planned: 90.9 %
    assert result.reasons[0].startswith(
        "Nov 2026 so far 15,000 $, on pace for 30,000 $ by 30 Nov: value 30,000 $ < yellow"
    )


def test_a_period_kpi_before_its_first_closed_period_has_no_verdict() -> None:
    kpi = make_kpi(**REVENUE)
    result = evaluate(kpi, _orders(NOV, 10, 1000), None, NOV + 10 * DAY, tz=UTC_TZ)
    assert result.status is Status.UNKNOWN
    assert result.reasons == ("no closed month yet",)
    assert result.state.data_problem is None  # nobody's problem: not yet


def test_percent_thresholds_are_direction_aware_and_need_the_periods_plan() -> None:
    lower = make_kpi(**{**REVENUE, "direction": "lower_is_better",
                        "thresholds": {"yellow": "105%", "red": "110%"}})  # fmt: skip
    assert lower.thresholds is not None
    assert resolved_thresholds(lower.thresholds, 200.0) == (210.0, 220.0)
    assert resolved_thresholds(lower.thresholds, None) == (None, None)
    history = _orders(OCT, 31, 1100)  # 34,100 $ against 31,000: 110 % exactly: yellow
    result = evaluate(lower, history, None, NOV + 3 * DAY, tz=UTC_TZ)
    assert result.status is Status.YELLOW


def test_a_month_without_a_plan_is_judged_by_the_other_rules_only() -> None:
    kpi = make_kpi(**{**REVENUE, "target": {"plan": {"2026-12": 1}}})
    result = evaluate(kpi, _orders(OCT, 31, 1000), None, NOV + 3 * DAY, tz=UTC_TZ)
    assert result.status is Status.GREEN
    assert result.state.plan is None


def test_plan_query_rows_are_the_plan() -> None:
    kpi = make_kpi(**{**REVENUE, "source": "wh", "query": "SELECT 1",
                      "target": {"plan_query": "SELECT month, target FROM plan"}})  # fmt: skip
    result = evaluate(kpi, _orders(OCT, 31, 1000), None, NOV + 3 * DAY, tz=UTC_TZ,
                      plans={"2026-10": 40000})  # fmt: skip
    assert result.state.plan == 40000
    assert result.status is Status.RED  # 31,000 < 90 % of 40,000


def test_change_vs_the_same_month_last_year() -> None:
    kpi = make_kpi(**{**REVENUE, "target": None, "thresholds": None,
                      "trend": {"change": {"max_pct": 10, "vs": "same_period_last_year",
                                           "severity": "red"}}})  # fmt: skip
    last_year = _orders(datetime(2025, 10, 1, tzinfo=UTC), 31, 1500)
    result = evaluate(kpi, last_year + _orders(OCT, 31, 1000), None, NOV + 3 * DAY, tz=UTC_TZ)
    assert result.status is Status.RED
    assert result.reasons[0].startswith("Oct 2026: down 33 % vs Oct 2025 (46,500 $)")


def test_a_seasonal_daily_kpi_says_when_history_is_short_and_fires_on_a_bad_tuesday() -> None:
    rides = {"id": "rides", "direction": "higher_is_better", "unit": "rides",
             "trend": {"seasonal": {"season": "7d", "seasons": 4, "max_pct": 20,
                                    "severity": "red"}}}  # fmt: skip
    kpi = make_kpi(**rides)
    tuesday = datetime(2026, 12, 1, 8, tzinfo=UTC)
    short = [Observation("rides", tuesday - k * 7 * DAY, 19500) for k in (2, 1)]
    few = evaluate(kpi, [*short, Observation("rides", tuesday, 12400)], None, tuesday)
    assert few.status is Status.GREEN
    assert "seasonal: not enough history (2 of 4 weeks)" in few.reasons
    assert few.reasons[0] == "value 12,400 rides, all rules pass"  # the green one first
    full = [Observation("rides", tuesday - k * 7 * DAY, 19500) for k in (4, 3, 2, 1)]
    bad = evaluate(kpi, [*full, Observation("rides", tuesday, 12400)], None, tuesday)
    assert bad.status is Status.RED
    assert bad.reasons == ("12,400 rides, 36 % below the usual Tuesday (19,500, median of 4)",)


def test_a_dated_target_counts_by_default_and_off_track_false_turns_it_off() -> None:
    target = {"value": 3.0, "by": "2026-12-31", "baseline": 6.0, "baseline_date": "2026-01-01"}
    behind = [Observation("churn", datetime(2026, 6, 1, tzinfo=UTC), 6.0)]
    now = datetime(2026, 6, 1, 1, tzinfo=UTC)
    counted = evaluate(make_kpi(target=target), behind, None, now)
    assert counted.status is Status.YELLOW
    assert counted.reasons[0].startswith("behind glide path")
    off = make_kpi(target=target, trend={"off_track": False})
    assert evaluate(off, behind, None, now).status is Status.GREEN
    red = make_kpi(target=target, trend={"off_track": "red"})
    assert evaluate(red, behind, None, now).status is Status.RED


def test_restatements_of_a_closed_month_and_not_of_the_open_one() -> None:
    kpi = make_kpi(**REVENUE)
    stored = _orders(OCT, 31, 1000) + _orders(NOV, 10, 1000)
    late = [Observation("revenue", OCT + 20 * DAY + timedelta(hours=13), 500),
            Observation("revenue", NOV + 10 * DAY + timedelta(hours=12), 1000)]  # fmt: skip
    merged = sorted(stored + late, key=lambda o: o.observed_at)
    [event] = restatements(kpi, stored, merged, NOV + 11 * DAY, UTC_TZ, OCT)
    # a period that starts before the stored history does was read in part: not restated
    assert restatements(kpi, stored[5:], merged, NOV + 11 * DAY, UTC_TZ, OCT + 5 * DAY) == ()
    assert event.kind is EventKind.RESTATED
    assert event.data == {"period": "Oct 2026", "period_start": OCT.isoformat(),
                          "old": 31000, "new": 31500, "unit": "$"}  # fmt: skip
    # (period_start, value) rows: a new value for a stored period replaces it in the store
    rows = make_kpi(**{**REVENUE, "aggregate": None})
    old = [Observation("revenue", OCT, 31000)]
    new = [Observation("revenue", OCT, 31500), Observation("revenue", NOV, 100)]
    assert restated_points(rows, old, new) == [Observation("revenue", OCT, 31500)]
    assert restated_points(make_kpi(), old, new) == []  # not a period KPI: first value stays


@settings(max_examples=60, deadline=None)
@given(
    outside=st.lists(
        st.tuples(
            st.integers(min_value=-200, max_value=-1) | st.integers(min_value=31, max_value=90),
            st.floats(min_value=0, max_value=1e6, allow_nan=False),
        ),
        max_size=20,
    )
)
def test_a_periods_verdict_never_depends_on_rows_outside_it(
    outside: list[tuple[int, float]],
) -> None:
    """Rows before October or after it (but before the judging moment's open month)
    change nothing about October's value, plan, status or reasons."""
    kpi = make_kpi(**REVENUE)
    october = _orders(OCT, 31, 1000)
    base = evaluate(kpi, october, None, NOV + 3 * DAY, tz=UTC_TZ)
    extra = [Observation("revenue", OCT + offset * DAY, value) for offset, value in outside
             if OCT + offset * DAY < NOV or OCT + offset * DAY >= NOV + 3 * DAY]  # fmt: skip
    history = sorted(october + extra, key=lambda o: o.observed_at)
    result = evaluate(kpi, history, None, NOV + 3 * DAY, tz=UTC_TZ)
    assert result.observed_at == base.observed_at
    assert result.value == base.value
    assert result.state.plan == base.state.plan
    assert result.findings[0] == base.findings[0]
