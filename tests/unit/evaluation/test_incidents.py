"""Data incidents (SPEC §5a): when a source as a whole fails, and what opens and closes one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kpiwatch.evaluation.incidents import (
    LISTED,
    KpiOutcome,
    SourceHealth,
    freshness_problem,
    incident_reason,
    step_incident,
)
from kpiwatch.model import EventKind

NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
OK = KpiOutcome(NOW, failed=False)


def _failed(at: datetime, reason: str, *, wide: bool = False, stale: bool = False) -> KpiOutcome:
    return KpiOutcome(at, True, source_wide=wide, stale=stale, reason=reason)


def test_the_latest_fetch_failing_on_the_source_is_an_incident() -> None:
    down = _failed(NOW + MIN, "cannot connect", wide=True)
    assert incident_reason({"a": OK, "b": down}, None) == "cannot connect"
    # a later fetch that worked: the source answers again
    assert incident_reason({"a": OK._replace(at=NOW + 2 * MIN), "b": down}, None) is None


def test_of_two_outcomes_at_one_moment_the_one_recorded_last_counts() -> None:
    down = _failed(NOW, "cannot connect", wide=True)
    assert incident_reason({"a": OK, "b": down}, None) == "cannot connect"
    assert incident_reason({"b": down, "a": OK}, None) is None


def test_one_kpis_query_failing_is_not_the_sources_incident() -> None:
    assert incident_reason({"a": OK, "b": _failed(NOW + MIN, "no such column")}, None) is None
    assert incident_reason({"b": _failed(NOW, "no rows")}, None) is None  # one KPI: its own


def test_every_kpi_failing_is_the_sources_incident() -> None:
    outcomes = {"a": _failed(NOW, "no such table: a"), "b": _failed(NOW + MIN, "no such table: b")}
    assert incident_reason(outcomes, None) == "all 2 of its KPIs fail, e.g. no such table: b"


def test_several_stale_kpis_are_the_sources_incident() -> None:
    stale = _failed(NOW, "stale: last value 3d ago (max_age 2d)", stale=True)
    assert incident_reason({"a": stale, "b": OK, "c": OK}, None) is None
    reason = incident_reason({"a": stale, "b": stale, "c": OK}, None)
    assert reason == "2 of its KPIs are stale, e.g. stale: last value 3d ago (max_age 2d)"


def test_a_failed_freshness_check_is_an_incident_even_with_every_kpi_fine() -> None:
    assert incident_reason({"a": OK}, "stale: last load 7h ago") == "stale: last load 7h ago"
    assert incident_reason({}, "stale: last load 7h ago") == "stale: last load 7h ago"
    assert incident_reason({}, None) is None


def test_an_incident_opens_once_and_closes_once_with_its_duration() -> None:
    kpis = ["a", "b"]
    health, [opened] = step_incident("wh", None, "cannot connect", NOW, kpis)
    assert health == SourceHealth(False, NOW, "cannot connect")
    assert (opened.kind, opened.source, opened.kpi_id) == (EventKind.DATA_INCIDENT, "wh", None)
    assert opened.data["kpis"] == kpis
    assert opened.data["count"] == 2
    again, events = step_incident("wh", health, "timeout", NOW + MIN, kpis)
    assert events == ()
    assert again == SourceHealth(False, NOW, "timeout")  # the same outage, its latest reason
    up, [closed] = step_incident("wh", again, None, NOW + 90 * MIN, kpis)
    assert up == SourceHealth(True, NOW + 90 * MIN)
    assert closed.kind is EventKind.DATA_RECOVERED
    assert closed.data["duration_seconds"] == 5400
    assert closed.data["duration"] == "1h30m"
    assert closed.data["since"] == NOW.isoformat()
    assert step_incident("wh", up, None, NOW + 91 * MIN, kpis) == (up, ())


def test_a_source_first_seen_working_records_no_event() -> None:
    health, events = step_incident("wh", None, None, NOW, ["a"])
    assert (health, events) == (SourceHealth(True, NOW), ())


def test_an_incident_lists_at_most_listed_kpis_and_counts_them_all() -> None:
    kpis = [f"k{i}" for i in range(LISTED + 7)]
    _, [opened] = step_incident("wh", None, "down", NOW, kpis)
    assert opened.data["count"] == LISTED + 7
    assert opened.data["kpis"] == kpis[:LISTED]


def test_freshness_problem() -> None:
    six = timedelta(hours=6)
    assert freshness_problem(NOW - six, NOW, six) is None
    assert freshness_problem(NOW - 7 * timedelta(hours=1), NOW, six) == (
        "stale: last load 7h ago (freshness max_age 6h)"
    )
    assert freshness_problem(None, NOW, six) == (
        "freshness check: no load recorded (the query gave nothing)"
    )
