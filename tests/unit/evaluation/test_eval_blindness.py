"""A data problem is not a verdict (SPEC §5a): the pure rules of blind spells."""

from __future__ import annotations

from datetime import timedelta

from _evalkit import NOW, make_kpi, series

from kpiwatch.config.rules import Kpi
from kpiwatch.evaluation import evaluate
from kpiwatch.evaluation.blindness import DataContext, owner_notice_due
from kpiwatch.model import DataProblem, Evaluation, EventKind, Status

LOWER = {"yellow": 4.5, "red": 5.5}
HOUR = timedelta(hours=1)
SOURCE_DOWN = DataContext(error_scope="source", data_owner="data@example.com",
                          incident_since=NOW)  # fmt: skip


def _red_then_blind(
    context: DataContext = SOURCE_DOWN, hours: int = 1
) -> tuple[Kpi, Evaluation, Evaluation]:
    kpi = make_kpi(thresholds=LOWER, escalation={"review": "weekly"})
    red = evaluate(kpi, series([6.0], end=NOW), None, NOW)
    blind = evaluate(kpi, series([6.0], end=NOW), red.state, NOW + hours * HOUR,
                     error="cannot connect", data=context)  # fmt: skip
    return kpi, red, blind


def test_a_blind_kpi_shows_unknown_and_carries_its_episode() -> None:
    _, red, blind = _red_then_blind()
    state = blind.state
    assert state.status is Status.UNKNOWN
    assert state.blind
    assert state.verdict is Status.RED
    assert state.episode_status is Status.RED
    # the episode: since, escalation, review cadence, reminders, the last value
    assert (state.since, state.escalated_since, state.review, state.next_review) == (
        red.state.since, red.state.escalated_since, red.state.review, red.state.next_review,
    )  # fmt: skip
    assert state.value == 6.0
    assert state.reasons == ("cannot connect",)
    assert state.data_problem == DataProblem(NOW + HOUR, "cannot connect", "source", "push")
    assert blind.events == ()  # a source's problem: its owner hears, not the KPI's


def test_the_same_verdict_after_a_spell_tells_nothing() -> None:
    kpi, red, blind = _red_then_blind()
    back = evaluate(kpi, series([6.2], end=NOW + 2 * HOUR), blind.state, NOW + 2 * HOUR)
    assert back.status is Status.RED
    assert back.state.since == red.state.since
    assert back.state.data_problem is None
    assert back.events == ()


def test_a_different_verdict_after_a_spell_is_one_change_from_the_old_verdict() -> None:
    kpi, red, blind = _red_then_blind()
    back = evaluate(kpi, series([3.0], end=NOW + 2 * HOUR), blind.state, NOW + 2 * HOUR)
    [change] = [e for e in back.events if e.kind is EventKind.STATUS_CHANGED]
    assert (change.data["from"], change.data["to"]) == ("red", "green")
    assert change.data["previous_since"] == red.state.since.isoformat()


def test_hysteresis_counts_against_the_last_verdict() -> None:
    kpi = make_kpi(thresholds=LOWER, **{"for": 2})
    red = evaluate(kpi, series([6.0], end=NOW), None, NOW)
    blind = evaluate(kpi, series([6.0], end=NOW), red.state, NOW + HOUR, error="x",
                     data=SOURCE_DOWN)  # fmt: skip
    once = evaluate(kpi, series([3.0], end=NOW + 2 * HOUR), blind.state, NOW + 2 * HOUR)
    assert once.status is Status.RED  # one green of the two `for` asks
    assert once.events == ()
    twice = evaluate(kpi, series([3.0], end=NOW + 3 * HOUR), once.state, NOW + 3 * HOUR)
    assert twice.status is Status.GREEN


def test_a_kpi_scope_problem_is_told_once_per_spell_to_the_owner_verbatim() -> None:
    kpi = make_kpi(thresholds=LOWER)
    green = evaluate(kpi, series([3.0], end=NOW), None, NOW)
    error = "query for 'k' failed: no such column: amount"
    first = evaluate(kpi, series([3.0], end=NOW), green.state, NOW + HOUR, error=error)
    [notice] = first.events
    assert notice.kind is EventKind.DATA_INCIDENT
    assert notice.kpi_id == kpi.id
    assert (notice.data["scope"], notice.data["reason"]) == ("kpi", error)
    assert notice.data["verdict"] == "green"
    assert first.state.data_problem is not None
    assert first.state.data_problem.told_at == NOW + HOUR
    again = evaluate(kpi, series([3.0], end=NOW), first.state, NOW + 2 * HOUR, error=error)
    assert again.events == ()
    assert again.state.data_problem == first.state.data_problem


def test_a_source_scope_spell_reaches_the_owner_once_after_notice_after() -> None:
    context = SOURCE_DOWN._replace(notice_after=timedelta(hours=3))
    kpi, _, blind = _red_then_blind(context)
    assert blind.events == ()
    state = blind.state
    for hours in (2, 3, 4, 5):
        step = evaluate(kpi, [], state, NOW + hours * HOUR, error="cannot connect", data=context)
        state = step.state
        if hours == 4:  # the spell began at +1h: 3h later
            [notice] = step.events
            assert notice.data["scope"] == "source"
            assert notice.data["data_owner"] == "data@example.com"
            assert notice.data["data_owner_told"] == NOW.isoformat()
        else:
            assert step.events == ()


def test_owner_notice_due() -> None:
    day = timedelta(days=1)
    kpi_scope = DataProblem(NOW, "x", "kpi", "wh")
    source_scope = DataProblem(NOW, "x", "source", "wh")
    assert owner_notice_due(kpi_scope, day, NOW)
    assert not owner_notice_due(kpi_scope._replace(told_at=NOW), day, NOW + HOUR)
    assert not owner_notice_due(source_scope, day, NOW + 23 * HOUR)
    assert owner_notice_due(source_scope, day, NOW + day)


def test_stale_is_the_sources_problem_when_the_context_says_so() -> None:
    kpi = make_kpi(thresholds=LOWER, max_age="2d")
    old = series([3.0], end=NOW - timedelta(days=3))
    mine = evaluate(kpi, old, None, NOW)
    theirs = evaluate(kpi, old, None, NOW, data=DataContext(stale_scope="source"))
    assert mine.state.data_problem is not None
    assert mine.state.data_problem.scope == "kpi"
    assert theirs.state.data_problem is not None
    assert theirs.state.data_problem.scope == "source"


def test_keep_last_judges_but_still_records_and_tells_the_problem() -> None:
    kpi = make_kpi(thresholds=LOWER, no_data="keep_last")
    result = evaluate(kpi, series([6.0], end=NOW - HOUR), None, NOW, error="HTTP 404")
    assert result.status is Status.RED
    assert not result.state.blind
    assert result.state.data_problem is not None
    kinds = [e.kind for e in result.events]
    assert kinds == [EventKind.DATA_INCIDENT, EventKind.STATUS_CHANGED, EventKind.ESCALATED]
