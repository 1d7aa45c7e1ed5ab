from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from _evalkit import NOW, make_kpi, series
from pydantic import ValidationError

from kpiwatch.evaluation import evaluate
from kpiwatch.evaluation.target import day_start, glide_expected, off_track, projection
from kpiwatch.model import Finding, Observation, Status

UTC_TZ = ZoneInfo("UTC")
Y = Status.YELLOW
MID = datetime(2026, 11, 16, 0, 0, tzinfo=UTC)  # half way from 2026-11-01 to 2026-12-01


def obs(at: datetime, value: float) -> Observation:
    return Observation("churn", at, value)


def track(history: list[Observation], now: datetime, **kw: object) -> list[Finding]:
    args: dict[str, object] = {
        "target": 3.5,
        "by": date(2026, 12, 1),
        "baseline": 5.0,
        "baseline_date": date(2026, 11, 1),
        "lower_is_better": True,
        "severity": Y,
        "unit": "%",
        "tz": UTC_TZ,
    }
    args.update(kw)
    return off_track(history, now, **args)  # type: ignore[arg-type]


# ---------------------------------------------------------------- glide path


def test_glide_expected_is_a_straight_line_then_the_target() -> None:
    b, t = day_start(date(2026, 11, 1), UTC_TZ), day_start(date(2026, 12, 1), UTC_TZ)
    assert glide_expected(b - 86_400, 5.0, b, 3.5, t) == 5.0  # before the baseline
    assert glide_expected(b, 5.0, b, 3.5, t) == 5.0
    assert glide_expected((b + t) / 2, 5.0, b, 3.5, t) == pytest.approx(4.25)
    assert glide_expected(t, 5.0, b, 3.5, t) == 3.5
    assert glide_expected(t + 10 * 86_400, 5.0, b, 3.5, t) == 3.5  # after by: the target


def test_behind_glide_path() -> None:
    findings = track([obs(MID, 4.8)], MID + timedelta(hours=10))
    assert findings == [
        Finding(
            "off_track",
            Y,
            "behind glide path: 4.8 % vs 4.25 % expected by today (target 3.5 % by 2026-12-01)",
        )
    ]


def test_on_the_glide_path_is_on_track() -> None:
    assert track([obs(MID, 4.25)], MID) == []
    assert track([obs(MID, 4.0)], MID) == []


def test_higher_is_better_glide_path() -> None:
    findings = track(
        [obs(MID, 60.0)], MID, target=100.0, baseline=50.0, lower_is_better=False, unit=""
    )
    assert [f.reason for f in findings] == [
        "behind glide path: 60 vs 75 expected by today (target 100 by 2026-12-01)"
    ]


def test_glide_path_judges_the_value_when_it_was_observed() -> None:
    # observed mid-way, evaluated a week later: compared with the path on its own day
    findings = track([obs(MID, 4.3)], MID + timedelta(days=7))
    assert [f.reason for f in findings] == [
        "behind glide path: 4.3 % vs 4.25 % expected by 2026-11-16 (target 3.5 % by 2026-12-01)"
    ]


def test_after_by_the_target_itself_applies() -> None:
    later = datetime(2026, 12, 5, tzinfo=UTC)
    assert [f.reason for f in track([obs(later, 3.6)], later)] == [
        "missed target: 3.6 %, target 3.5 % by 2026-12-01"
    ]
    assert track([obs(later, 3.5)], later) == []


def test_baseline_defaults_to_the_first_observation() -> None:
    history = [obs(datetime(2026, 11, 1, tzinfo=UTC), 5.0), obs(MID, 4.9)]
    findings = track(history, MID, baseline=None, baseline_date=None)
    assert [f.reason for f in findings] == [
        "behind glide path: 4.9 % vs 4.25 % expected by today (target 3.5 % by 2026-12-01)"
    ]


def test_before_the_baseline_date_the_baseline_is_expected() -> None:
    early = datetime(2026, 10, 20, tzinfo=UTC)
    assert track([obs(early, 5.0)], early) == []
    assert len(track([obs(early, 5.1)], early)) == 1


def test_dates_are_days_in_the_configured_timezone() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    assert (
        day_start(date(2026, 12, 1), berlin)
        == datetime(2026, 11, 30, 23, 0, tzinfo=UTC).timestamp()
    )


# ---------------------------------------------------------------- projection


def _slow_improvement() -> list[Observation]:
    # lower is better: falling 0.02 a week, far too slowly for 3.5 by 2027-06-30
    return series([5.0, 4.98, 4.96, 4.94])


def test_projection_of_a_straight_line() -> None:
    by = day_start(date(2027, 6, 30), UTC_TZ)
    days = (by - NOW.timestamp()) / 86_400
    assert projection(_slow_improvement(), by) == pytest.approx(4.94 - 0.02 / 7 * days)


def test_projection_misses_the_target() -> None:
    by = date(2027, 6, 30)
    days = (day_start(by, UTC_TZ) - NOW.timestamp()) / 86_400
    projected = 4.94 - 0.02 / 7 * days
    findings = track(_slow_improvement(), NOW, by=by, baseline=6.0, baseline_date=date(2026, 11, 1))
    assert findings == [
        Finding("off_track", Y, f"projected {projected:.4g} % by 2027-06-30, target 3.5 %")
    ]


def test_projection_on_course_is_on_track() -> None:
    history = series([5.0, 4.9, 4.8, 4.7])  # 0.1 a week: about 1.6 by the end of June
    assert track(history, NOW, by=date(2027, 6, 30), baseline=6.0) == []


def test_projection_uses_only_the_last_90_days() -> None:
    # years of steep improvement, then flat for the last 13 weeks
    old = series([20.0 - i for i in range(10)], end=NOW - timedelta(days=100))
    recent = series([4.0] * 13)
    by = day_start(date(2027, 6, 30), UTC_TZ)
    assert projection(old + recent, by) == pytest.approx(4.0)


def test_projection_uses_at_most_26_points() -> None:
    # 40 daily points: the first 14 wild, the last 26 on a line
    wild = [100.0 * (i % 2) for i in range(14)]
    line = [5.0 + 0.1 * i for i in range(26)]
    history = series(wild + line, step=timedelta(days=1))
    at = NOW.timestamp() + 10 * 86_400
    assert projection(history, at) == pytest.approx(line[-1] + 0.1 * 10)


def test_projection_needs_three_recent_points() -> None:
    by = day_start(date(2027, 6, 30), UTC_TZ)
    assert projection(series([5.0, 4.0]), by) is None
    history = series([9.0, 9.0, 9.0], end=NOW - timedelta(days=200)) + series([5.0, 6.0])
    assert projection(history, by) is None
    same_moment = [obs(NOW, 1.0), obs(NOW, 2.0), obs(NOW, 3.0)]
    assert projection(same_moment, by) is None


def test_no_projection_after_by() -> None:
    later = datetime(2026, 12, 20, tzinfo=UTC)
    history = series([3.0, 3.1, 3.2, 3.3], end=later)  # rising, but the deadline has passed
    assert track(history, later) == []


def test_glide_and_projection_both_reported() -> None:
    history = series([5.0, 5.0, 5.0, 5.0], end=MID)
    reasons = [f.reason for f in track(history, MID)]
    assert reasons == [
        "behind glide path: 5 % vs 4.25 % expected by today (target 3.5 % by 2026-12-01)",
        "projected 5 % by 2026-12-01, target 3.5 %",
    ]


# ---------------------------------------------------------------- through evaluate


def test_off_track_through_evaluate_with_its_severity() -> None:
    kpi = make_kpi(
        target={"value": 3.5, "by": "2026-12-01", "baseline": 5.0, "baseline_date": "2026-11-01"},
        trend={"off_track": "red"},
    )
    result = evaluate(kpi, [obs(MID, 4.8)], None, MID + timedelta(hours=1))
    assert result.raw_status is Status.RED
    assert result.reasons == (
        "behind glide path: 4.8 % vs 4.25 % expected by today (target 3.5 % by 2026-12-01)",
    )


def test_target_without_off_track_is_only_shown() -> None:
    plain = make_kpi(target={"value": 3.5})
    assert evaluate(plain, series([9.0, 9.5, 9.9]), None, NOW).raw_status is Status.GREEN
    silent = make_kpi(target={"value": 3.5, "by": "2026-12-01", "baseline": 5.0})
    assert evaluate(silent, [obs(MID, 4.8)], None, MID).raw_status is Status.GREEN


def test_off_track_without_a_target_date_is_a_load_error() -> None:
    with pytest.raises(ValidationError, match="off_track needs a target with a date"):
        make_kpi(target={"value": 3.5}, trend={"off_track": True})
