from __future__ import annotations

from datetime import timedelta

import pytest
from _evalkit import NOW, make_kpi, series

from kpiwatch.evaluation import evaluate
from kpiwatch.model import EventKind, Finding, NoData, Status

LOWER = {"yellow": 4.5, "red": 5.5}
HOUR = timedelta(hours=1)


def test_no_observations_and_no_error_is_no_data_yet() -> None:
    for mode in NoData:
        result = evaluate(make_kpi(no_data=mode.value), [], None, NOW)
        assert result.raw_status is Status.UNKNOWN
        assert result.findings == (Finding("no_data", Status.UNKNOWN, "no data yet"),)
        assert result.value is None
        assert result.observed_at is None
    first = evaluate(make_kpi(), [], None, NOW)
    assert first.status is Status.UNKNOWN
    # unknown is no verdict (SPEC §5): nothing to tell until there is one, and a KPI
    # nothing has been asked of yet is nobody's data problem
    assert first.events == ()
    assert first.state.verdict is None
    assert first.state.data_problem is None


def test_error_with_no_data_unknown() -> None:
    kpi = make_kpi(thresholds=LOWER)
    result = evaluate(kpi, series([5.8], end=NOW - HOUR), None, NOW, error="timeout after 30s")
    assert result.raw_status is Status.UNKNOWN
    assert result.findings == (Finding("source", Status.UNKNOWN, "timeout after 30s"),)
    assert result.value is None
    assert result.state.error == "timeout after 30s"
    assert result.state.value is None


def test_error_with_no_data_red() -> None:
    kpi = make_kpi(thresholds=LOWER, no_data="red")
    result = evaluate(kpi, series([1.0], end=NOW - HOUR), None, NOW, error="HTTP 500")
    assert result.raw_status is Status.RED
    assert result.findings == (Finding("source", Status.RED, "HTTP 500"),)
    assert result.value is None
    # red is the owner's choice for missing data: a verdict, told as one; the data
    # problem is still theirs to hear about (this KPI's own query, by default)
    assert [e.kind for e in result.events] == [
        EventKind.DATA_INCIDENT, EventKind.STATUS_CHANGED, EventKind.ESCALATED,
    ]  # fmt: skip
    assert result.state.data_problem is not None
    assert not result.state.blind


def test_error_with_no_data_red_and_no_history() -> None:
    result = evaluate(make_kpi(no_data="red"), [], None, NOW, error="HTTP 500")
    assert result.raw_status is Status.RED
    assert result.reasons == ("HTTP 500",)


def test_error_with_keep_last_judges_the_last_value() -> None:
    kpi = make_kpi(thresholds=LOWER, no_data="keep_last")
    result = evaluate(kpi, series([4.0, 5.8], end=NOW - HOUR), None, NOW, error="HTTP 500")
    assert result.raw_status is Status.RED
    assert result.value == 5.8
    assert result.observed_at == NOW - HOUR
    assert result.findings == (
        Finding("source", Status.UNKNOWN, "HTTP 500 (keeping the last value, from 1h ago)"),
        Finding("threshold", Status.RED, "value 5.8 % > red 5.5 %"),
    )
    assert result.state.error == "HTTP 500"


def test_keep_last_green_keeps_the_note() -> None:
    kpi = make_kpi(thresholds=LOWER, no_data="keep_last")
    result = evaluate(kpi, series([3.9], end=NOW - HOUR), None, NOW, error="HTTP 500")
    assert result.raw_status is Status.GREEN
    assert result.reasons == (
        "HTTP 500 (keeping the last value, from 1h ago)",
        "value 3.9 % within thresholds",
    )


def test_keep_last_without_any_value_is_unknown() -> None:
    result = evaluate(make_kpi(no_data="keep_last"), [], None, NOW, error="HTTP 500")
    assert result.raw_status is Status.UNKNOWN
    assert result.reasons == ("HTTP 500",)


@pytest.mark.parametrize(("mode", "status"), [("unknown", Status.UNKNOWN), ("red", Status.RED)])
def test_stale(mode: str, status: Status) -> None:
    kpi = make_kpi(thresholds=LOWER, max_age="2d", no_data=mode)
    result = evaluate(kpi, series([3.0], end=NOW - timedelta(days=3)), None, NOW)
    assert result.raw_status is status
    assert result.findings == (Finding("stale", status, "stale: last value 3d ago (max_age 2d)"),)
    assert result.value is None
    assert result.state.error is None


def test_stale_keep_last() -> None:
    kpi = make_kpi(thresholds=LOWER, max_age="2d", no_data="keep_last")
    history = series([3.0, 4.7], end=NOW - timedelta(days=3, hours=4))
    result = evaluate(kpi, history, None, NOW)
    assert result.raw_status is Status.YELLOW
    assert result.value == 4.7
    assert result.reasons == (
        "stale: last value 3d4h ago (max_age 2d), keeping it",
        "value 4.7 % > yellow 4.5 %",
    )


def test_exactly_max_age_old_is_not_stale() -> None:
    kpi = make_kpi(thresholds=LOWER, max_age="2d")
    result = evaluate(kpi, series([3.0], end=NOW - timedelta(days=2)), None, NOW)
    assert result.raw_status is Status.GREEN


def test_error_takes_precedence_over_staleness() -> None:
    kpi = make_kpi(max_age="2d")
    result = evaluate(kpi, series([3.0], end=NOW - timedelta(days=3)), None, NOW, error="boom")
    assert result.reasons == ("boom",)


def test_recovery_clears_the_error() -> None:
    kpi = make_kpi(thresholds=LOWER)
    down = evaluate(kpi, series([3.0], end=NOW - HOUR), None, NOW, error="boom")
    up = evaluate(kpi, series([3.0, 3.1]), down.state, NOW + HOUR)
    assert up.state.error is None
    assert up.state.data_problem is None
    assert up.status is Status.GREEN
    # the first verdict after a spell with none before it: no change "from unknown",
    # and green on a first verdict tells nobody
    assert up.events == ()
