"""evaluate() composes the rule functions: it keeps nothing on the Kpi, follows each
call's rules and timezone, and folds statuses exactly as ``apply_hysteresis`` and
``step_escalation`` do.
"""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

from _evalkit import NOW, make_kpi, series
from hypothesis import given, settings
from hypothesis import strategies as st

from kpiwatch.evaluation import evaluate
from kpiwatch.evaluation.escalation import step_escalation
from kpiwatch.evaluation.hysteresis import apply_hysteresis
from kpiwatch.model import KpiState, Status

RULES = {
    "thresholds": {"yellow": 4.5, "red": 5.5},
    "target": {"value": 3.5, "by": "2027-06-30"},
    "trend": {"worsening_streak": 2, "change": {"max_pct": 5, "over": "7d"}, "off_track": "red"},
}


def test_an_evaluated_kpi_stays_equal_to_a_fresh_one() -> None:
    kpi, fresh = make_kpi(**RULES), make_kpi(**RULES)
    evaluate(kpi, series([4.0, 4.4, 4.9, 5.8]), None, NOW)
    assert kpi == fresh
    assert fresh == kpi
    assert kpi.model_dump() == fresh.model_dump()
    assert repr(kpi) == repr(fresh)


def test_a_copy_with_other_rules_is_judged_by_its_own_rules() -> None:
    kpi = make_kpi(thresholds={"yellow": 4.5, "red": 5.5})
    history = series([5.0])
    assert evaluate(kpi, history, None, NOW).raw_status is Status.YELLOW
    thresholds = kpi.thresholds
    assert thresholds is not None
    # model_copy copies the instance __dict__, where the plan is kept
    looser = kpi.model_copy(update={"thresholds": thresholds.model_copy(update={"yellow": 5.2})})
    assert evaluate(looser, history, None, NOW).raw_status is Status.GREEN
    assert evaluate(kpi, history, None, NOW).raw_status is Status.YELLOW


def test_the_target_dates_follow_the_timezone_of_each_call() -> None:
    kpi = make_kpi(target={"value": 3.0, "by": "2026-11-24", "baseline": 5.0,
                           "baseline_date": "2026-11-16"},
                   trend={"off_track": "yellow"})  # fmt: skip
    history = series([4.2], end=NOW)
    reasons = set()
    for zone in ("UTC", "Pacific/Kiritimati", "Pacific/Pago_Pago", "UTC"):
        tz = ZoneInfo(zone)
        fresh = make_kpi(**kpi.model_dump(by_alias=True, exclude_defaults=True))
        result = evaluate(kpi, history, None, NOW, tz=tz)
        assert result == evaluate(fresh, history, None, NOW, tz=tz)
        reasons.add(result.reasons)
    assert len(reasons) == 3  # the dates do move with the timezone


@settings(max_examples=100, deadline=None)
@given(
    values=st.lists(st.sampled_from([3.0, 5.0, 6.0]), min_size=1, max_size=12),
    for_=st.integers(1, 3),
    stable_for=st.sampled_from([1, 2, 3, "2h", "1d"]),
)
def test_evaluate_steps_like_hysteresis_and_escalation(
    values: list[float], for_: int, stable_for: int | str
) -> None:
    kpi = make_kpi(thresholds={"yellow": 4.5, "red": 5.5}, for_=for_,
                   escalation={"review": "daily", "stable_for": stable_for})  # fmt: skip
    previous: KpiState | None = None
    for i, value in enumerate(values):
        now = NOW + timedelta(hours=i)
        result = evaluate(kpi, series([value], end=now), previous, now)
        hyst = apply_hysteresis(previous, result.raw_status, for_, now)
        esc = step_escalation(kpi.escalation, kpi.review, previous, hyst.status, hyst.changed, now)
        state = result.state
        assert (state.status, state.since, state.pending_status, state.pending_count) == (
            hyst.status, hyst.since, hyst.pending_status, hyst.pending_count,
        )  # fmt: skip
        assert (state.review, state.escalated_since, state.green_since, state.green_count) == (
            esc.review, esc.escalated_since, esc.green_since, esc.green_count,
        )  # fmt: skip
        kinds = [event.kind.value for event in result.events]
        assert ("escalated" in kinds) == esc.escalated
        assert ("de_escalated" in kinds) == esc.de_escalated
        previous = state
