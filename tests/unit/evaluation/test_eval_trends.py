from __future__ import annotations

from datetime import timedelta

from _evalkit import NOW, make_kpi, series

from kpiwatch.evaluation import evaluate
from kpiwatch.evaluation.trends import change, value_at_or_before, worsening_streak
from kpiwatch.model import Finding, Observation, Status

DAY = timedelta(days=1)
Y = Status.YELLOW

# ---------------------------------------------------------------- worsening_streak


def test_streak_fires_when_the_last_n_changes_are_all_worse() -> None:
    history = series([4.0, 4.1, 4.6, 5.0, 5.3])
    assert worsening_streak(history, 3, True, Y, "%") == Finding(
        "worsening_streak", Y, "worse 3 times in a row (4.1 → 4.6 → 5.0 → 5.3 %)"
    )


def test_streak_equal_is_not_worse() -> None:
    assert worsening_streak(series([4.1, 4.6, 4.6, 5.3]), 3, True, Y, "%") is None


def test_streak_one_better_step_breaks_it() -> None:
    assert worsening_streak(series([4.1, 4.6, 4.5, 5.3]), 3, True, Y, "%") is None
    # ...but only within the last N changes
    assert worsening_streak(series([4.1, 3.0, 4.5, 5.3]), 2, True, Y, "%") is not None


def test_streak_higher_is_better_counts_drops() -> None:
    finding = worsening_streak(series([95, 93, 90]), 2, False, Status.RED, "")
    assert finding == Finding(
        "worsening_streak", Status.RED, "worse 2 times in a row (95 → 93 → 90)"
    )
    assert worsening_streak(series([90, 93, 95]), 2, False, Y, "") is None


def test_streak_needs_n_plus_one_values() -> None:
    assert worsening_streak(series([4.0, 4.1, 4.6]), 3, True, Y, "%") is None
    assert worsening_streak(series([4.0, 4.1]), 1, True, Y, "%") == Finding(
        "worsening_streak", Y, "worse once (4.0 → 4.1 %)"
    )


def test_streak_through_evaluate_uses_the_rule_severity() -> None:
    kpi = make_kpi(trend={"worsening_streak": {"count": 2, "severity": "red"}})
    result = evaluate(kpi, series([1.0, 2.0, 3.0]), None, NOW)
    assert result.raw_status is Status.RED
    assert result.reasons == ("worse 2 times in a row (1 → 2 → 3 %)",)


# ---------------------------------------------------------------- change


def test_change_pct_fires_above_the_limit() -> None:
    history = series([4.0, 5.0], step=7 * DAY)
    finding = change(history, NOW, 7 * DAY, 20, None, True, Y, "%")
    assert finding == Finding("change", Y, "up 25.0 % in 7d (4 → 5 %), more than 20 %")


def test_change_pct_exactly_at_the_limit_is_fine() -> None:
    assert change(series([4.0, 4.8]), NOW, 7 * DAY, 20, None, True, Y, "%") is None


def test_change_in_the_better_direction_never_fires() -> None:
    assert change(series([5.0, 2.0]), NOW, 7 * DAY, 20, None, True, Y, "%") is None
    assert change(series([2.0, 5.0]), NOW, 7 * DAY, 20, None, False, Y, "%") is None


def test_change_higher_is_better_drop() -> None:
    finding = change(series([100.0, 70.0]), NOW, 7 * DAY, 20, None, False, Y, "")
    assert finding is not None
    assert finding.reason == "down 30.0 % in 7d (100 → 70), more than 20 %"


def test_change_pct_relative_to_abs_of_a_negative_old_value() -> None:
    # margin -10 -> -13 (higher is better): 3 worse on |-10| = 30 %
    finding = change(series([-10.0, -13.0]), NOW, 7 * DAY, 20, None, False, Y, "")
    assert finding is not None
    assert finding.reason == "down 30.0 % in 7d (-10 → -13), more than 20 %"


def test_change_pct_skips_an_old_value_of_zero() -> None:
    assert change(series([0.0, 50.0]), NOW, 7 * DAY, 20, None, True, Y, "%") is None


def test_change_abs() -> None:
    finding = change(series([4.0, 4.6]), NOW, 7 * DAY, None, 0.5, True, Status.RED, "%")
    assert finding == Finding("change", Status.RED, "up 0.6 % in 7d (4.0 → 4.6 %), more than 0.5 %")
    assert change(series([4.0, 4.5]), NOW, 7 * DAY, None, 0.5, True, Y, "%") is None


def test_change_compares_with_the_latest_value_at_or_before_now_minus_over() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0]  # daily, day 0..10
    history = series(values, step=DAY)
    now = history[-1].observed_at + timedelta(hours=12)
    # now - 7d lies half a day after day 3 (value 4.0): 11 vs 4
    finding = change(history, now, 7 * DAY, None, 1.0, True, Y, "")
    assert finding is not None
    assert finding.reason == "up 7 in 7d (4 → 11), more than 1"
    assert value_at_or_before(history, history[3].observed_at) is history[3]
    assert value_at_or_before(history, history[0].observed_at - DAY) is None


def test_change_without_enough_history_is_silent() -> None:
    assert change(series([1.0, 9.0], step=DAY), NOW, 7 * DAY, 20, None, True, Y, "%") is None
    assert change([], NOW, 7 * DAY, 20, None, True, Y, "%") is None


def test_change_when_the_current_value_is_itself_older_than_over() -> None:
    history = [Observation("churn", NOW - 30 * DAY, 1.0), Observation("churn", NOW - 10 * DAY, 9.0)]
    assert change(history, NOW, 7 * DAY, 20, None, True, Y, "%") is None


def test_change_through_evaluate() -> None:
    kpi = make_kpi(trend={"change": {"max_pct": 20, "over": "7d"}})
    result = evaluate(kpi, series([3.0, 4.0, 5.0]), None, NOW)
    assert result.raw_status is Status.YELLOW
    assert result.reasons == ("up 25.0 % in 7d (4 → 5 %), more than 20 %",)
