from __future__ import annotations

from datetime import timedelta

from _evalkit import NOW, make_kpi, run, series

from kpiwatch.evaluation import evaluate
from kpiwatch.evaluation.hysteresis import apply_hysteresis
from kpiwatch.model import EventKind, Status

LOWER = {"yellow": 4.5, "red": 5.5}
HOUR = timedelta(hours=1)
G, Y, R, U = Status.GREEN, Status.YELLOW, Status.RED, Status.UNKNOWN


def statuses(kpi_for: int, values: list[float | None]) -> list[Status]:
    kpi = make_kpi(thresholds=LOWER, for_=kpi_for)
    return [r.status for r in run(kpi, values)]


def test_for_1_follows_the_raw_status_at_once() -> None:
    assert statuses(1, [3.0, 5.0, 6.0, 3.0]) == [G, Y, R, G]


def test_first_evaluation_red_notifies() -> None:
    result = evaluate(make_kpi(thresholds=LOWER), series([5.8]), None, NOW)
    change = result.events[0]
    assert change.kind is EventKind.STATUS_CHANGED
    assert change.key == "churn:status_changed:2026-11-23T10:00:00+00:00"
    assert change.at == NOW
    assert change.kpi_id == "churn"
    assert dict(change.data) == {
        "from": None,
        "to": "red",
        "value": 5.8,
        "unit": "%",
        "reasons": ["value 5.8 % > red 5.5 %"],
        "first": True,
        "previous_since": None,
    }
    assert result.state.since == NOW


def test_first_evaluation_green_is_silent_and_later_changes_notify() -> None:
    first, second, third = run(make_kpi(thresholds=LOWER), [3.0, 3.1, 4.6])
    assert first.status is G
    assert first.events == ()
    assert second.events == ()
    assert [e.kind for e in third.events] == [EventKind.STATUS_CHANGED]
    assert third.events[0].data["from"] == "green"
    assert third.events[0].data["to"] == "yellow"
    assert third.events[0].data["first"] is False


def test_first_evaluation_takes_the_raw_status_even_with_for_3() -> None:
    [result] = run(make_kpi(thresholds=LOWER, for_=3), [6.0])
    assert result.status is R
    assert result.state.pending_status is None
    assert result.events[0].data["first"] is True


def test_for_3_needs_three_agreeing_evaluations_to_change() -> None:
    results = run(make_kpi(thresholds=LOWER, for_=3), [3.0, 6.0, 6.1, 6.2, 6.3])
    assert [r.status for r in results] == [G, G, G, R, R]
    assert [r.raw_status for r in results] == [G, R, R, R, R]
    assert [(r.state.pending_status, r.state.pending_count) for r in results] == [
        (None, 0),
        (R, 1),
        (R, 2),
        (None, 0),
        (None, 0),
    ]
    assert [r.events for r in results[1:3]] == [(), ()]
    assert results[3].events[0].data == {
        "from": "green",
        "to": "red",
        "value": 6.2,
        "unit": "%",
        "reasons": ["value 6.2 % > red 5.5 %"],
        "first": False,
        "previous_since": NOW.isoformat(),
    }
    assert results[3].state.since == NOW + 3 * HOUR
    assert results[4].state.since == NOW + 3 * HOUR  # the episode goes on


def test_for_3_a_disagreeing_evaluation_resets_the_count() -> None:
    #                    G    Y    Y    G    Y    Y    Y
    values: list[float | None] = [3.0, 5.0, 5.0, 3.0, 5.0, 5.0, 5.0]
    results = run(make_kpi(thresholds=LOWER, for_=3), [3.0, 3.0, 3.0, *values])
    assert [r.status for r in results][3:] == [G, G, G, G, G, G, Y]


def test_for_3_a_different_pending_status_starts_over() -> None:
    results = run(make_kpi(thresholds=LOWER, for_=3), [3.0, 3.0, 3.0, 5.0, 6.0, 6.0, 6.0])
    assert [r.status for r in results] == [G, G, G, G, G, G, R]
    assert results[4].state.pending_status is R
    assert results[4].state.pending_count == 1


def test_for_n_first_evaluation_unknown_raw_is_taken_at_once() -> None:
    result = evaluate(make_kpi(for_=3), [], None, NOW)
    assert result.status is U
    assert result.state.pending_status is None


def test_apply_hysteresis_keeps_since_while_unchanged() -> None:
    state = evaluate(make_kpi(thresholds=LOWER), series([5.0]), None, NOW).state
    step = apply_hysteresis(state, Y, 1, NOW + HOUR)
    assert step.status is Y
    assert step.since == NOW
    assert step.changed is False
