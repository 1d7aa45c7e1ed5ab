"""evaluate(): apply a KPI's rules to its history and fold the result into its state.

Pure: no I/O, no clock (``now`` is passed in), no global state. The steps:

1. data problems (source error, stale value, no data) and the ``no_data`` mode;
2. the value rules: thresholds, worsening streak, change, off track;
3. the raw status: the worst finding;
4. hysteresis (``for``) -> effective status and episode;
5. escalation and the review cadence in force;
6. events: ``status_changed``, ``escalated``, ``de_escalated`` (in that order).

When the raw status is green and a value was judged, there is exactly one green
finding, ``value 3.9 % within thresholds`` (rule ``threshold``) or, for a KPI
without thresholds, ``value 3.9 %, all rules pass`` (rule ``value``): a
recovery notification then says what the value is. Findings never hold
"green" results of single rules otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from kpiwatch.config.rules import Kpi
from kpiwatch.evaluation.escalation import more_frequent
from kpiwatch.evaluation.format import fmt_age, fmt_span, fmt_value
from kpiwatch.evaluation.review import next_review
from kpiwatch.evaluation.target import day_start, track
from kpiwatch.evaluation.thresholds import check_thresholds
from kpiwatch.evaluation.trends import change, value_at_or_before, worsening_streak
from kpiwatch.model import (
    Direction,
    Evaluation,
    Event,
    EventKind,
    Finding,
    KpiState,
    NoData,
    Observation,
    ReviewCadence,
    Status,
)

_UTC = ZoneInfo("UTC")
_NINE = time(9, 0)
_GREEN = Status.GREEN
_YELLOW = Status.YELLOW
_RED = Status.RED
_UNKNOWN = Status.UNKNOWN
_SEVERITY = {_UNKNOWN: -1, _GREEN: 0, _YELLOW: 1, _RED: 2}
# KpiState, Evaluation and Finding are NamedTuples; tuple.__new__ is what their
# generated __new__ calls, without its Python frame (~0.15 us a call, 3 a KPI)
_new = tuple.__new__


class _Plan:
    """What evaluate() needs of a KPI's rules, derived once per ``Kpi`` object.

    Rules are immutable (frozen pydantic models) and the daemon evaluates the same
    ``Kpi`` objects every cycle until a reload builds new ones; deriving the
    constants (direction, rule switches, target dates as timestamps, the
    escalated cadence) once saves about a microsecond per evaluation.

    The plan is kept in the ``Kpi``'s instance ``__dict__``, as
    ``functools.cached_property`` would (pydantic ignores such entries in
    ``==``, ``hash``, dumps and ``repr``). It records the ``id()`` of its ``Kpi``:
    ``model_copy()`` copies the ``__dict__``, and a copy must not use the
    original's plan.
    """

    __slots__ = (
        "baseline",
        "baseline_date",
        "by",
        "change_severity",
        "dates",
        "escalated_review",
        "for_",
        "green_tail",
        "kpi_id",
        "lower",
        "max_abs",
        "max_age",
        "max_pct",
        "no_data",
        "over",
        "owner",
        "red",
                "review",
        "review_time",
        "stable_count",
        "stable_span",
        "streak",
        "streak_severity",
        "target",
        "thresholds",
        "track",
        "track_severity",
        "unit",
        "yellow",
    )  # fmt: skip

    def __init__(self, kpi: Kpi) -> None:
        self.owner = id(kpi)
        self.kpi_id = kpi.id
        self.unit = kpi.unit
        self.lower = kpi.direction is Direction.LOWER_IS_BETTER
        thresholds = kpi.thresholds
        self.thresholds = thresholds is not None
        self.yellow = None if thresholds is None else thresholds.yellow
        self.red = None if thresholds is None else thresholds.red
        trend = kpi.trend
        streak = None if trend is None else trend.worsening_streak
        self.streak: int | None = None if streak is None else streak.count
        self.streak_severity = _YELLOW if streak is None else streak.severity
        rule = None if trend is None else trend.change
        self.over: timedelta | None = None if rule is None else rule.over
        self.max_pct = None if rule is None else rule.max_pct
        self.max_abs = None if rule is None else rule.max_abs
        self.change_severity = _YELLOW if rule is None else rule.severity
        target = kpi.target
        severity = None if trend is None else trend.off_track
        self.track = severity is not None and target is not None and target.by is not None
        self.track_severity = _YELLOW if severity is None else severity
        self.target = 0.0 if target is None else target.value
        self.by: date = date.min if target is None or target.by is None else target.by
        self.baseline = None if target is None else target.baseline
        self.baseline_date = None if target is None else target.baseline_date
        # (tz, by, baseline_date) as timestamps for the timezone evaluate() got:
        # one tuple, replaced at once, so that threads never see half of it
        self.dates: tuple[ZoneInfo | None, float, float | None] = (None, 0.0, None)
        self.for_ = kpi.for_
        self.review = kpi.review
        escalation = kpi.escalation
        self.escalated_review = more_frequent(escalation.review, kpi.review)
        stable_for = escalation.stable_for
        self.stable_count = stable_for if isinstance(stable_for, int) else None
        self.stable_span = stable_for if isinstance(stable_for, timedelta) else None
        self.max_age = kpi.max_age
        self.no_data = kpi.no_data
        self.review_time = kpi.review_time
        unit = f" {kpi.unit}" if kpi.unit else ""
        self.green_tail = (
            f"{unit} within thresholds" if thresholds is not None else f"{unit}, all rules pass"
        )

    def dates_in(self, tz: ZoneInfo) -> tuple[ZoneInfo | None, float, float | None]:
        """``by`` and ``baseline_date`` as timestamps in ``tz`` (one timezone per daemon)."""
        baseline = self.baseline_date
        dates = (tz, day_start(self.by, tz), None if baseline is None else day_start(baseline, tz))
        self.dates = dates
        return dates


_PLAN_KEY = "_kpiwatch_evaluation_plan"


def _plan(kpi: Kpi) -> _Plan:
    plan: _Plan | None = kpi.__dict__.get(_PLAN_KEY)
    if plan is None or plan.owner != id(kpi):
        plan = _Plan(kpi)
        kpi.__dict__[_PLAN_KEY] = plan  # a cache: the Kpi itself is unchanged
    return plan


def judge_value(
    kpi: Kpi, history: Sequence[Observation], now: datetime, tz: ZoneInfo
) -> list[Finding]:
    """The yellow/red findings of the value rules for the last observation of ``history``."""
    return _judge(_plan(kpi), history, now, tz) or []


def _judge(
    plan: _Plan, history: Sequence[Observation], now: datetime, tz: ZoneInfo
) -> list[Finding] | None:
    """:func:`judge_value`, None when no rule fires.

    Each rule is first checked inline on bare numbers; only a rule that fires
    calls its module's function, which checks again and words the reason.
    """
    findings: list[Finding] | None = None
    lower = plan.lower
    last = history[-1]
    value = last.value
    if plan.thresholds:
        yellow = plan.yellow
        red = plan.red
        if lower:
            fires = (red is not None and value > red) or (yellow is not None and value > yellow)
        else:
            fires = (red is not None and value < red) or (yellow is not None and value < yellow)
        if fires:
            finding = check_thresholds(value, lower, yellow, red, plan.unit)
            if finding is not None:
                findings = [finding]
    count = plan.streak
    if count is not None and len(history) > count:
        newer = value
        for observation in history[-2 : -(count + 2) : -1]:
            older = observation.value
            if (newer <= older) if lower else (newer >= older):
                break
            newer = older
        else:
            finding = worsening_streak(history, count, lower, plan.streak_severity, plan.unit)
            if finding is not None:
                findings = [finding] if findings is None else [*findings, finding]
    over = plan.over
    if over is not None:
        cutoff = now - over
        if last.observed_at > cutoff:
            if len(history) >= 2 and history[-2].observed_at <= cutoff:
                old: Observation | None = history[-2]
            else:
                old = value_at_or_before(history, cutoff)
            if old is not None:
                # change()'s tests on bare numbers; it repeats them when wording the reason
                base = old.value
                delta = value - base
                worse_by = delta if lower else -delta
                max_pct = plan.max_pct
                if worse_by <= 0:
                    fires = False
                elif max_pct is not None:
                    fires = base != 0 and not worse_by / abs(base) * 100.0 <= max_pct
                else:
                    max_abs = plan.max_abs
                    fires = max_abs is not None and not worse_by <= max_abs
                if fires:
                    finding = change(
                        history, now, over, plan.max_pct, plan.max_abs, lower,
                        plan.change_severity, plan.unit,
                    )  # fmt: skip
                    if finding is not None:
                        findings = [finding] if findings is None else [*findings, finding]
    if plan.track:
        dates = plan.dates
        if dates[0] is not tz:
            dates = plan.dates_in(tz)
        found = track(
            history, now, plan.target, plan.by, dates[1], plan.baseline, dates[2],
            lower, plan.track_severity, plan.unit, tz,
        )  # fmt: skip
        if found is not None:
            findings = found if findings is None else [*findings, *found]
    return findings


def _data_problem(
    kpi: Kpi, last: Observation | None, now: datetime, error: str | None
) -> tuple[str, str, str] | None:
    """(rule, reason, reason when the last value is kept), or None when the data is fine."""
    if error is not None:
        if last is None:
            return "source", error, error
        age = fmt_age(now - last.observed_at)
        return "source", error, f"{error} (keeping the last value, from {age} ago)"
    max_age = kpi.max_age
    if last is None or max_age is None:
        return None
    age_delta = now - last.observed_at
    if age_delta <= max_age:
        return None
    reason = f"stale: last value {fmt_age(age_delta)} ago (max_age {fmt_span(max_age)})"
    return "stale", reason, f"{reason}, keeping it"


def evaluate(
    kpi: Kpi,
    history: Sequence[Observation],
    previous: KpiState | None,
    now: datetime,
    *,
    error: str | None = None,
    tz: ZoneInfo = _UTC,
    review_time: time = _NINE,
) -> Evaluation:
    """Evaluate ``kpi`` at ``now`` and return the findings, the new state and the events.

    ``history`` is ascending by ``observed_at``; its last item is the current
    value (it may be empty). ``error`` is the text of a failed fetch.
    ``kpi.review_time`` overrides ``review_time``.
    """
    plan = kpi.__dict__.get(_PLAN_KEY)
    if plan is None or plan.owner != id(kpi):
        plan = _plan(kpi)
    kpi_id = plan.kpi_id
    last = history[-1] if history else None
    judged: Observation | None = None
    problem = (
        None  # the usual case, without a call
        if error is None and (last is None or plan.max_age is None)
        else _data_problem(kpi, last, now, error)
    )
    findings: tuple[Finding, ...]
    reasons: tuple[str, ...] | None
    if problem is None and last is None:
        raw = _UNKNOWN
        findings = (_new(Finding, ("no_data", _UNKNOWN, "no data yet")),)
        reasons = ("no data yet",)
    elif problem is not None and (plan.no_data is not NoData.KEEP_LAST or last is None):
        raw = _RED if plan.no_data is NoData.RED else _UNKNOWN
        findings = (_new(Finding, (problem[0], raw, problem[1])),)
        reasons = (problem[1],)
    else:
        assert last is not None
        judged = last
        rule_findings = _judge(plan, history, now, tz)
        raw = _GREEN
        if rule_findings is None:
            # the one green finding says what the value is (a recovery notification shows it)
            number = last.value
            if 1e-4 <= abs(number) < 1e4:  # fmt_value's common case, inline
                reason = f"value {number:.4g}{plan.green_tail}"
            else:
                reason = f"value {fmt_value(number, '')}{plan.green_tail}"
            green = _new(Finding, ("threshold" if plan.thresholds else "value", _GREEN, reason))
            findings = (green,)
            reasons = (reason,)
        else:
            worst = 0
            for finding in rule_findings:
                severity = _SEVERITY[finding.status]
                if severity > worst:
                    worst = severity
                    raw = finding.status
            findings = tuple(rule_findings)
            reasons = None
        if problem is not None:
            # with keep_last, the data problem comes first: it qualifies everything after it
            findings = (_new(Finding, (problem[0], _UNKNOWN, problem[2])), *findings)
            reasons = None

    # hysteresis (see hysteresis.apply_hysteresis, inlined: same steps)
    pending: Status | None = None
    pending_count = 0
    if previous is None:
        status = raw
        since = now
        changed = True
    else:
        status = previous.status
        since = previous.since
        changed = False
        if raw is not status:
            pending_count = previous.pending_count + 1 if previous.pending_status is raw else 1
            if pending_count >= plan.for_:
                status = raw
                since = now
                changed = True
                pending_count = 0
            else:
                pending = raw

    # escalation (see escalation.step_escalation, inlined: same steps)
    escalated = de_escalated = False
    escalated_since = None if previous is None else previous.escalated_since
    if status is not _GREEN:
        green_since: datetime | None = None
        green_count = 0
        if changed and status is _RED and escalated_since is None:
            escalated = True
            escalated_since = now
            review = plan.escalated_review
        else:
            review = plan.review if escalated_since is None else plan.escalated_review
    else:
        if previous is not None and previous.status is _GREEN and not changed:
            green_since = previous.green_since or now
            green_count = previous.green_count + 1
        else:
            green_since = now
            green_count = 1
        if escalated_since is None:
            review = plan.review
        else:
            stable_count = plan.stable_count
            if stable_count is not None:
                stable = green_count >= stable_count
            else:
                assert plan.stable_span is not None
                stable = now - green_since >= plan.stable_span
            if stable:
                de_escalated = True
                escalated_since = None
                review = plan.review
            else:
                review = plan.escalated_review

    if previous is None or previous.next_review is None or previous.review is not review:
        upcoming = next_review(review, now, tz, plan.review_time or review_time)
    else:
        upcoming = previous.next_review

    value = None if judged is None else judged.value
    observed_at = None if judged is None else judged.observed_at
    if reasons is None:
        reasons = tuple([f.reason for f in findings])
    state = _new(KpiState, (
        kpi_id,
        status,
        since,
        review,
        pending,  # pending_status
        pending_count,
        value,
        observed_at,
        reasons,
        now,  # last_evaluated
        escalated_since,
        green_since,
        green_count,
        None if previous is None else previous.last_review,
        upcoming,  # next_review
        error,
    ))  # fmt: skip

    if not (changed or escalated or de_escalated):  # the usual case: no event
        return _new(Evaluation, (kpi_id, now, value, observed_at, raw, findings, state, ()))
    events = _events(kpi, previous, state, now, changed, escalated, de_escalated)
    return _new(Evaluation, (kpi_id, now, value, observed_at, raw, findings, state, events))


def _events(
    kpi: Kpi,
    previous: KpiState | None,
    state: KpiState,
    now: datetime,
    changed: bool,
    escalated: bool,
    de_escalated: bool,
) -> tuple[Event, ...]:
    """``status_changed``, ``escalated``, ``de_escalated``, in that order, as they apply."""
    kpi_id = state.kpi_id
    status = state.status
    review: ReviewCadence = state.review
    value = state.value
    reasons = state.reasons
    events: list[Event] = []
    if changed and (previous is not None or status is not _GREEN):
        events.append(_event(EventKind.STATUS_CHANGED, kpi_id, now, {
            "from": None if previous is None else previous.status.value,
            "to": status.value,
            "value": value,
            "unit": kpi.unit,
            "reasons": list(reasons),
            "first": previous is None,
        }))  # fmt: skip
    if escalated:
        events.append(_event(EventKind.ESCALATED, kpi_id, now, {
            "since": state.since.isoformat(),  # the episode it belongs to (Slack threads)
            "review": review.value,
            "from_review": kpi.review.value,
            "status": status.value,
            "value": value,
            "unit": kpi.unit,
            "reasons": list(reasons),
        }))  # fmt: skip
    if de_escalated:
        assert previous is not None
        assert previous.escalated_since is not None
        green_since = state.green_since
        events.append(_event(EventKind.DE_ESCALATED, kpi_id, now, {
            "since": state.since.isoformat(),
            "review": review.value,
            "from_review": previous.review.value,
            "escalated_since": previous.escalated_since.isoformat(),
            "green_since": None if green_since is None else green_since.isoformat(),
            "green_count": state.green_count,
        }))  # fmt: skip
    return tuple(events)


def _event(kind: EventKind, kpi_id: str, now: datetime, data: dict[str, object]) -> Event:
    """An event keyed by KPI, kind and moment: evaluating the same moment twice stores it once."""
    return Event(kind=kind, key=f"{kpi_id}:{kind.value}:{now.isoformat()}", at=now,
                 kpi_id=kpi_id, data=data)  # fmt: skip
