from __future__ import annotations

import pytest
from _evalkit import NOW, make_kpi, series

from kpiwatch.evaluation import evaluate
from kpiwatch.evaluation.thresholds import check_thresholds, threshold_status
from kpiwatch.model import Finding, Status

LOWER = {"yellow": 4.5, "red": 5.5}
HIGHER = {"yellow": 90, "red": 85}


@pytest.mark.parametrize(
    ("value", "status", "reason"),
    [
        (5.8, Status.RED, "value 5.8 % > red 5.5 %"),
        (4.6, Status.YELLOW, "value 4.6 % > yellow 4.5 %"),
        (5.5, Status.YELLOW, "value 5.5 % > yellow 4.5 %"),  # equal to red is acceptable
        (4.5, Status.GREEN, None),  # equal to yellow is acceptable
        (1.0, Status.GREEN, None),
    ],
)
def test_lower_is_better(value: float, status: Status, reason: str | None) -> None:
    finding = check_thresholds(value, True, 4.5, 5.5, "%")
    if reason is None:
        assert finding is None
    else:
        assert finding == Finding("threshold", status, reason)


@pytest.mark.parametrize(
    ("value", "status", "reason"),
    [
        (80, Status.RED, "value 80 < red 85"),
        (88, Status.YELLOW, "value 88 < yellow 90"),
        (85, Status.YELLOW, "value 85 < yellow 90"),
        (90, Status.GREEN, None),
        (99, Status.GREEN, None),
    ],
)
def test_higher_is_better(value: float, status: Status, reason: str | None) -> None:
    finding = check_thresholds(value, False, 90, 85, "")
    if reason is None:
        assert finding is None
    else:
        assert finding == Finding("threshold", status, reason)


def test_either_threshold_may_be_omitted() -> None:
    assert threshold_status(9.0, True, None, 5.5) is Status.RED
    assert threshold_status(5.0, True, None, 5.5) is Status.GREEN
    assert threshold_status(9.0, True, 4.5, None) is Status.YELLOW
    assert threshold_status(9.0, True, None, None) is Status.GREEN
    assert threshold_status(1.0, False, None, 2.0) is Status.RED


def test_near_equal_values_read_differently() -> None:
    finding = check_thresholds(5.500001, True, None, 5.5, "%")
    assert finding is not None
    assert finding.reason == "value 5.500001 % > red 5.5 %"


def test_evaluate_threshold_red() -> None:
    kpi = make_kpi(thresholds=LOWER)
    result = evaluate(kpi, series([4.0, 5.8]), None, NOW)
    assert result.raw_status is Status.RED
    assert result.status is Status.RED
    assert result.value == 5.8
    assert result.observed_at == NOW
    assert result.reasons == ("value 5.8 % > red 5.5 %",)
    assert result.state.reasons == result.reasons


def test_evaluate_green_gives_one_green_finding() -> None:
    result = evaluate(make_kpi(thresholds=LOWER), series([3.9]), None, NOW)
    assert result.raw_status is Status.GREEN
    assert result.findings == (Finding("threshold", Status.GREEN, "value 3.9 % within thresholds"),)


def test_evaluate_green_without_thresholds() -> None:
    result = evaluate(make_kpi(unit=""), series([42.0]), None, NOW)
    assert result.findings == (Finding("value", Status.GREEN, "value 42, all rules pass"),)


def test_raw_status_is_the_worst_of_thresholds_and_trends() -> None:
    kpi = make_kpi(thresholds=LOWER, trend={"worsening_streak": {"count": 2, "severity": "red"}})
    result = evaluate(kpi, series([3.0, 3.5, 4.6]), None, NOW)
    assert [f.status for f in result.findings] == [Status.YELLOW, Status.RED]
    assert result.raw_status is Status.RED
    assert result.reasons == (
        "value 4.6 % > yellow 4.5 %",
        "worse 2 times in a row (3.0 → 3.5 → 4.6 %)",
    )
