"""The retention (KPIWATCH_RETENTION): what each KPI keeps, and that no verdict changes."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest
from _evalkit import NOW, make_kpi, series

from kpiwatch.evaluation import evaluate
from kpiwatch.evaluation.evaluate import history_points, history_window
from kpiwatch.evaluation.retention import kept_history, kept_removed, retained
from kpiwatch.model import Kept, Observation

DAY = timedelta(days=1)
THRESHOLDS = {"thresholds": {"yellow": 4.0, "red": 6.0}}
RULES: dict[str, dict[str, Any]] = {
    "thresholds": THRESHOLDS,
    "streak": {**THRESHOLDS, "trend": {"worsening_streak": {"count": 3, "severity": "red"}}},
    "change": {**THRESHOLDS, "trend": {"change": {"max_pct": 20, "over": "30d"}}},
    "seasonal": {"trend": {"seasonal": {"season": "7d", "seasons": 4, "max_pct": 20,
                                        "severity": "yellow"}}},
    "off_track": {"target": {"value": 3.0, "by": "2027-06-01"}, "trend": {"off_track": "red"}},
    "period": {"period": "month", "aggregate": "sum", **THRESHOLDS},
}  # fmt: skip


def test_a_kpi_judged_on_its_last_points_keeps_those_and_the_retention() -> None:
    assert kept_history(make_kpi(**RULES["thresholds"]), NOW, 30 * DAY) == Kept(NOW - 30 * DAY, 1)
    assert kept_history(make_kpi(**RULES["streak"]), NOW, 30 * DAY) == Kept(NOW - 30 * DAY, 4)


@pytest.mark.parametrize(
    ("rules", "window"),
    [("change", 400), ("seasonal", 400), ("off_track", 400), ("period", 800)],
)
def test_a_kpi_whose_rules_look_back_keeps_its_whole_window(rules: str, window: int) -> None:
    kpi = make_kpi(**RULES[rules])
    assert kept_history(kpi, NOW, 30 * DAY) == Kept(NOW - window * DAY, 1)
    # a longer retention wins over the window
    assert kept_history(kpi, NOW, 1000 * DAY) == Kept(NOW - 1000 * DAY, 1)


def test_a_kpi_removed_from_the_rules_keeps_the_retention_and_no_point_more() -> None:
    assert kept_removed(NOW, 30 * DAY) == Kept(NOW - 30 * DAY, 0)


def test_a_poll_stores_what_the_retention_keeps_in_its_order() -> None:
    points = series([1.0, 2.0, 3.0, 4.0, 5.0], step=DAY)  # NOW-4d ... NOW
    shuffled = [points[3], points[0], points[4], points[1], points[2]]
    assert retained(Kept(NOW - 2 * DAY, 1), shuffled) == [points[3], points[4], points[2]]
    # the newest points stay however old: a KPI polled monthly keeps its last value
    assert retained(Kept(NOW + DAY, 2), shuffled) == [points[3], points[4]]
    assert retained(Kept(NOW - 9 * DAY, 1), shuffled) == shuffled
    assert retained(Kept(NOW, 1), []) == []


def _read_as_the_runner_does(kpi_rules: dict[str, Any], stored: list[Observation]) -> list[Any]:
    """What the runner reads of a KPI's stored points (newest points or the window)."""
    kpi = make_kpi(**kpi_rules)
    window = [o for o in stored if o.observed_at >= NOW - history_window(kpi)]
    points = history_points(kpi)
    return window if points is None else window[-points:]


@pytest.mark.parametrize("rules", sorted(RULES))
@pytest.mark.parametrize("retention", [timedelta(hours=1), 3 * DAY, 90 * DAY])
def test_retention_never_changes_a_verdict(rules: str, retention: timedelta) -> None:
    """Every rule kind over 30 months of 6-hourly points, and a KPI whose last point is
    old (30 monthly points): judged from what the retention keeps, the evaluation is the
    one judged from everything."""
    kpi = make_kpi(**RULES[rules])
    rng = random.Random(f"{rules}{retention}")
    steady = series([3 + rng.uniform(-2, 4) for _ in range(4 * 900)], step=timedelta(hours=6))
    stale = series([rng.uniform(1, 9) for _ in range(30)], end=NOW - 40 * DAY, step=30 * DAY)
    for history in (steady, stale):
        kept = retained(kept_history(kpi, NOW, retention), history)
        assert len(kept) < len(history)  # something went
        full = evaluate(kpi, _read_as_the_runner_does(RULES[rules], history), None, NOW)
        pruned = evaluate(kpi, _read_as_the_runner_does(RULES[rules], kept), None, NOW)
        assert pruned == full
