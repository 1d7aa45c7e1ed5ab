"""Invariants of the evaluation core, checked on generated inputs."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from _evalkit import NOW, make_kpi
from hypothesis import given, settings
from hypothesis import strategies as st

from kpiwatch.evaluation import evaluate, history_points, next_review, review_tick
from kpiwatch.evaluation.hysteresis import apply_hysteresis
from kpiwatch.evaluation.thresholds import threshold_status
from kpiwatch.model import KpiState, Observation, ReviewCadence, Status

FAST = settings(max_examples=150, deadline=None)
finite = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False)
statuses = st.sampled_from(list(Status))
cadences = st.sampled_from(list(ReviewCadence))
zones = st.sampled_from(
    [ZoneInfo(z) for z in ("UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe")]
)


@FAST
@given(
    a=finite,
    b=finite,
    limits=st.tuples(st.none() | finite, st.none() | finite),
    lower=st.booleans(),
)
def test_a_worse_value_never_gets_a_better_threshold_status(
    a: float, b: float, limits: tuple[float | None, float | None], lower: bool
) -> None:
    yellow, red = limits
    if yellow is not None and red is not None and (yellow > red if lower else yellow < red):
        yellow, red = red, yellow  # a valid configuration: yellow is never beyond red
    better, worse = (min(a, b), max(a, b)) if lower else (max(a, b), min(a, b))
    assert (
        threshold_status(worse, lower, yellow, red).severity
        >= threshold_status(better, lower, yellow, red).severity
    )


def _fold(raws: list[Status], for_: int) -> list[Status]:
    state: KpiState | None = None
    effective = []
    for i, raw in enumerate(raws):
        now = NOW + timedelta(minutes=i)
        step = apply_hysteresis(state, raw, for_, now)
        state = KpiState(
            kpi_id="k",
            status=step.status,
            since=step.since,
            review=ReviewCadence.MONTHLY,
            pending_status=step.pending_status,
            pending_count=step.pending_count,
        )
        effective.append(step.status)
    return effective


@FAST
@given(raws=st.lists(statuses, min_size=1, max_size=40), for_=st.integers(1, 5))
def test_for_n_needs_n_agreeing_evaluations(raws: list[Status], for_: int) -> None:
    effective = _fold(raws, for_)
    for i in range(1, len(raws)):
        if effective[i] is not effective[i - 1]:
            # a change needs the last `for` raw statuses to agree on the new one
            assert i + 1 >= for_
            assert all(r is effective[i] for r in raws[i + 1 - for_ : i + 1])
        if i + 1 >= for_ and all(r is raws[i] for r in raws[i + 1 - for_ : i + 1]):
            assert effective[i] is raws[i]  # ...and N agreeing ones are enough


@FAST
@given(raws=st.lists(statuses, min_size=1, max_size=40), for_=st.integers(1, 5))
def test_effective_status_is_one_of_the_raw_statuses_seen(raws: list[Status], for_: int) -> None:
    effective = _fold(raws, for_)
    for i, status in enumerate(effective):
        # before anything is confirmed a KPI with for > 1 is unknown
        assert status in raws[: i + 1] or (status is Status.UNKNOWN and for_ > 1)
    if for_ == 1:
        assert effective == raws


@FAST
@given(
    cadence=cadences,
    after=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    tz=zones,
    at=st.times(),
)
def test_next_review_is_after_and_on_the_right_day(
    cadence: ReviewCadence, after: datetime, tz: ZoneInfo, at: time
) -> None:
    moment = next_review(cadence, after, tz, at)
    assert moment > after
    assert moment.utcoffset() == timedelta(0)
    local = moment.astimezone(tz)
    if cadence is ReviewCadence.WEEKLY:
        assert local.weekday() == 0
    elif cadence is ReviewCadence.MONTHLY:
        assert local.day == 1
    elif cadence is ReviewCadence.QUARTERLY:
        assert local.day == 1
        assert local.month in (1, 4, 7, 10)
    # on the review time, unless that wall time does not exist that day (DST gap)
    wall = datetime.combine(local.date(), at.replace(tzinfo=None), tzinfo=tz)
    if wall.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == wall.replace(tzinfo=None):
        assert local.time() == at.replace(tzinfo=None, fold=0)
    # ...and no review moment is skipped: the one before is not after `after`
    assert next_review(cadence, moment - timedelta(seconds=1), tz, at) == moment


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.sampled_from([1.0, 5.0, 9.0]), min_size=1, max_size=25),
    own=cadences,
    escalated=cadences,
    stable_for=st.integers(1, 4),
    for_=st.integers(1, 3),
)
def test_escalated_cadence_is_never_less_frequent_than_the_own(
    values: list[float],
    own: ReviewCadence,
    escalated: ReviewCadence,
    stable_for: int,
    for_: int,
) -> None:
    kpi = make_kpi(
        thresholds={"yellow": 4.0, "red": 8.0},
        review=own.value,
        escalation={"review": escalated.value, "stable_for": stable_for},
        for_=for_,
    )
    state = None
    history: list[Observation] = []
    for i, value in enumerate(values):
        now = NOW + timedelta(hours=i)
        history.append(Observation("churn", now, value))
        result = evaluate(kpi, history, state, now)
        state, _ = review_tick(kpi, result.state, now, ZoneInfo("UTC"), time(9, 0))
        assert state.review.rank <= own.rank
        if state.escalated:
            assert state.review.rank <= escalated.rank
        else:
            assert state.review is own
        assert state.next_review is not None
        assert state.next_review > now
        assert state.green_count == 0 or state.status is Status.GREEN


# KPIs whose rules look only at their last points, and ones that look back in time
_NEWEST_ONLY = [
    {"thresholds": {"yellow": 5.0, "red": 8.0}},
    {"thresholds": {"yellow": 5.0, "red": 8.0}, "trend": {"worsening_streak": 3}, "for": 2},
    {"trend": {"worsening_streak": 1}, "max_age": "2d", "no_data": "keep_last"},
]
_WHOLE_WINDOW = [
    {"trend": {"change": {"over": "14d", "max_pct": 10}}},
    {"target": {"value": 1.0, "by": "2027-06-01"}},
    {"period": "month", "thresholds": {"yellow": 5.0, "red": 8.0}},
]


@FAST
@given(
    spec=st.sampled_from(_NEWEST_ONLY),
    values=st.lists(st.floats(min_value=0, max_value=10, allow_nan=False), max_size=12),
    previous=st.none() | statuses,
)
def test_the_newest_points_history_points_names_judge_as_the_whole_history(
    spec: dict[str, object], values: list[float], previous: Status | None
) -> None:
    """What the daemon reads (Store.evaluation_inputs with ``newest``) is all it needs:
    the evaluation of those points equals that of the whole history (issue 15)."""
    kpi = make_kpi(**spec)
    points = history_points(kpi)
    assert points is not None
    history = [Observation("churn", NOW - timedelta(days=len(values) - i), v)
               for i, v in enumerate(values)]  # fmt: skip
    state = None
    if previous is not None:
        state = KpiState(
            kpi_id="churn",
            status=previous,
            since=NOW - timedelta(days=30),
            review=ReviewCadence.MONTHLY,
            last_evaluated=NOW - timedelta(days=1),
        )
    assert evaluate(kpi, history[-points:], state, NOW) == evaluate(kpi, history, state, NOW)


def test_rules_that_look_back_in_time_need_the_whole_window() -> None:
    assert [history_points(make_kpi(**spec)) for spec in _NEWEST_ONLY] == [1, 4, 2]
    assert [history_points(make_kpi(**spec)) for spec in _WHOLE_WINDOW] == [None] * 3
