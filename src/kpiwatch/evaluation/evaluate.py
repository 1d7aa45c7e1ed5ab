"""evaluate(): apply a KPI's rules to its history and fold the result into its state.

Pure: no I/O, no clock (``now`` is passed in), no global state. The steps:

1. data problems (source error, stale value, no data) and the ``no_data`` mode;
   a KPI that cannot be judged is *blind*: it shows unknown and its last verdict's
   episode carries on (:mod:`kpiwatch.evaluation.blindness`); steps 4-6 skip it;
2. the value rules: thresholds, worsening streak, change, off track;
3. the raw status: the worst finding;
4. hysteresis (``for``) -> effective status and episode, against the last verdict;
5. escalation and the review cadence in force;
6. events: ``status_changed``, ``escalated``, ``de_escalated`` (in that order),
   after the data problem's notice to the owner when one is due.

When the raw status is green and a value was judged, the first finding is the
green one, ``value 3.9 % within thresholds`` (rule ``threshold``) or, for a KPI
without thresholds, ``value 3.9 %, all rules pass`` (rule ``value``): a
recovery notification then says what the value is. The only other green
findings are notes of rules that could not judge ("seasonal: not enough history
(2 of 4 weeks)"). A KPI with ``period`` judges a period
(:mod:`kpiwatch.evaluation.judging`), and every reason names it ("Nov 2026: …").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from kpiwatch.config.rules import Kpi
from kpiwatch.evaluation.blindness import DataContext, blind_state, judged_basis, track_problem
from kpiwatch.evaluation.comparisons import change_vs
from kpiwatch.evaluation.escalation import step_escalation
from kpiwatch.evaluation.format import fmt_age, fmt_span, fmt_value
from kpiwatch.evaluation.hysteresis import apply_hysteresis
from kpiwatch.evaluation.judging import judging, resolved_thresholds
from kpiwatch.evaluation.review import scheduled_review
from kpiwatch.evaluation.seasonal import seasonal
from kpiwatch.evaluation.target import off_track
from kpiwatch.evaluation.thresholds import check_thresholds
from kpiwatch.evaluation.trends import change, worsening_streak
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

# how much history an evaluation sees (the daemon's store read, a replay's slice):
# trend rules look back far less
HISTORY_WINDOW = timedelta(days=400)
# a KPI with a period compares periods with last year's (vs, seasonal): two years of them
PERIOD_HISTORY_WINDOW = timedelta(days=800)


def history_window(kpi: Kpi) -> timedelta:
    """How far back the history of ``kpi`` an evaluation sees reaches."""
    return HISTORY_WINDOW if kpi.period is None else PERIOD_HISTORY_WINDOW


def history_points(kpi: Kpi) -> int | None:
    """How many of its newest points (within :func:`history_window`) the evaluation of
    ``kpi`` depends on; None when it may depend on every point in the window.

    A KPI judged by thresholds (and a worsening streak) reads only its last point (and
    the streak's ``count + 1``): its verdict and state come out the same from those as
    from the whole window. Reading the whole window instead makes a cycle's memory and
    time grow with the history kept (400 days of 5-minute points are 115,000 a KPI),
    issue 15. The rules that look back in time (``change``, ``seasonal``, off track,
    periods) need the window.
    """
    if kpi.period is not None:
        return None  # periods are bucketed from raw points, compared with last year's
    trend = kpi.trend
    points = 1  # thresholds, the data checks (stale, no data, keep_last): the last point
    if trend is not None:
        if trend.change is not None or trend.seasonal is not None:
            return None  # the value ``over`` ago, the same moment in earlier seasons
        if trend.worsening_streak is not None:
            points = trend.worsening_streak.count + 1
    if kpi.off_track_severity is not None:
        return None  # the glide path starts at the first point; the projection fits all
    return points


_UTC = ZoneInfo("UTC")
_NINE = time(9, 0)
_NO_CONTEXT = DataContext()
_SEVERITY = {Status.UNKNOWN: -1, Status.GREEN: 0, Status.YELLOW: 1, Status.RED: 2}


def judge_value(
    kpi: Kpi, history: Sequence[Observation], now: datetime, tz: ZoneInfo,
    plan: float | None = None,
) -> list[Finding]:  # fmt: skip
    """The findings of the value rules for the last observation of ``history``:
    thresholds, worsening streak, change, seasonal and off track, in that order.

    Yellow and red findings, and green notes of rules that could not judge
    ("seasonal: not enough history (2 of 4 weeks)"). ``history`` is the judged
    series (periods, for a KPI with ``period``); ``plan`` the judged period's plan.
    """
    lower = kpi.direction is Direction.LOWER_IS_BETTER
    unit = kpi.unit
    found: list[Finding | None] = []
    point = history[-1]
    if kpi.thresholds is not None:
        yellow, red = resolved_thresholds(kpi.thresholds, plan)
        found.append(check_thresholds(point.value, lower, yellow, red, unit))
    trend = kpi.trend
    if trend is not None:
        streak = trend.worsening_streak
        if streak is not None:
            found.append(worsening_streak(history, streak.count, lower, streak.severity, unit))
        rule = trend.change
        if rule is not None and rule.over is not None:
            # a period is judged at its start: "over" counts back from there
            moment = now if kpi.period is None else point.observed_at
            found.append(change(
                history, moment, rule.over, rule.max_pct, rule.max_abs, lower, rule.severity, unit
            ))  # fmt: skip
        if rule is not None and rule.vs is not None and kpi.period is not None:
            found.append(change_vs(
                history, point.observed_at, point.value, rule.vs, kpi.period, tz, rule.max_pct,
                rule.max_abs, lower, rule.severity, unit,
            ))  # fmt: skip
        season = trend.seasonal
        if season is not None:
            found.append(seasonal(
                history, season.season, season.seasons, season.max_pct, season.max_abs, lower,
                season.severity, unit, tz,
            ))  # fmt: skip
    target, severity = kpi.target, kpi.off_track_severity
    if severity is not None and target is not None and target.by is not None:
        assert target.value is not None  # a dated target has a value (config)
        found.extend(off_track(
            history, now, target.value, target.by, target.baseline, target.baseline_date,
            lower, severity, unit, tz,
        ))  # fmt: skip
    return [finding for finding in found if finding is not None]


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


def _green_finding(kpi: Kpi, value: float, plan: float | None) -> Finding:
    """The one green finding: it says what the value is (a recovery notification shows it)."""
    shown = fmt_value(value, kpi.unit)
    planned = "" if plan is None else f" (plan {fmt_value(plan, kpi.unit)})"
    if kpi.thresholds is not None:
        return Finding("threshold", Status.GREEN, f"value {shown} within thresholds{planned}")
    return Finding("value", Status.GREEN, f"value {shown}, all rules pass{planned}")


def _findings(
    kpi: Kpi, history: Sequence[Observation], now: datetime, error: str | None, tz: ZoneInfo,
    plans: Mapping[str, float] | None,
) -> tuple[tuple[Finding, ...], Observation | None, float | None]:  # fmt: skip
    """Steps 1 and 2: the findings, the point judged (None when none was) and its plan."""
    last = history[-1] if history else None
    problem = _data_problem(kpi, last, now, error)
    if problem is None and last is None:
        return (Finding("no_data", Status.UNKNOWN, "no data yet"),), None, None
    if problem is not None and (kpi.no_data is not NoData.KEEP_LAST or last is None):
        status = Status.RED if kpi.no_data is NoData.RED else Status.UNKNOWN
        return (Finding(problem[0], status, problem[1]),), None, None
    judged = judging(kpi, history, now, tz, plans, history_window(kpi))
    if judged is None:  # a period KPI before its first period closed: nothing to judge yet
        assert kpi.period is not None
        which = "value for the current" if kpi.judge == "current" else "closed"
        nothing = Finding("no_data", Status.UNKNOWN, f"no {which} {kpi.period.value} yet")
        return (nothing,), None, None
    found = judge_value(kpi, judged.series, now, tz, judged.plan)
    notes = [finding for finding in found if finding.status is Status.GREEN]
    verdicts = [finding for finding in found if finding.status is not Status.GREEN]
    findings = (verdicts or [_green_finding(kpi, judged.point.value, judged.plan)]) + notes
    if judged.label is not None:  # name the period judged, wherever the reasons go
        findings = [f._replace(reason=f"{judged.label}: {f.reason}") for f in findings]
    if problem is not None:
        # with keep_last, the data problem comes first: it qualifies everything after it
        findings.insert(0, Finding(problem[0], Status.UNKNOWN, problem[2]))
    return tuple(findings), judged.point, judged.plan


def raw_status(findings: Sequence[Finding]) -> Status:
    """Step 3: the worst finding's status (a lone data problem gives its own)."""
    return max(findings, key=lambda finding: _SEVERITY[finding.status]).status


def evaluate(
    kpi: Kpi,
    history: Sequence[Observation],
    previous: KpiState | None,
    now: datetime,
    *,
    error: str | None = None,
    tz: ZoneInfo = _UTC,
    review_time: time = _NINE,
    data: DataContext = _NO_CONTEXT,
    plans: Mapping[str, float] | None = None,
) -> Evaluation:
    """Evaluate ``kpi`` at ``now`` and return the findings, the new state and the events.

    ``history`` is ascending by ``observed_at``; its last item is the current
    value (it may be empty). ``error`` is the text of a failed fetch; ``data``
    what the runner knows of the source (the scope of a data problem); ``plans``
    the rows of the KPI's ``plan_query``, by plan key (``2026-11``).
    ``kpi.review_time`` overrides ``review_time``.
    """
    findings, judged, plan = _findings(kpi, history, now, error, tz, plans)
    raw = raw_status(findings)
    problem, notices = track_problem(kpi, previous, findings, now, data)
    at = kpi.review_time or review_time
    if raw is Status.UNKNOWN:  # blind: no verdict to fold in
        cadence = kpi.review if previous is None else previous.review
        upcoming = scheduled_review(previous, cadence, now, tz, at)
        state = blind_state(kpi, previous, findings, problem, now, error, upcoming)
        return Evaluation(kpi.id, now, None, None, raw, findings, state, notices)
    basis = judged_basis(previous)
    effective = apply_hysteresis(basis, raw, kpi.for_, now)
    escalation = step_escalation(
        kpi.escalation, kpi.review, previous, effective.status, effective.changed, now
    )
    upcoming = scheduled_review(previous, escalation.review, now, tz, at)
    value = None if judged is None else judged.value
    observed_at = None if judged is None else judged.observed_at
    state = KpiState(
        kpi_id=kpi.id,
        status=effective.status,
        since=effective.since,
        review=escalation.review,
        pending_status=effective.pending_status,
        pending_count=effective.pending_count,
        value=value,
        observed_at=observed_at,
        reasons=tuple(finding.reason for finding in findings),
        last_evaluated=now,
        escalated_since=escalation.escalated_since,
        green_since=escalation.green_since,
        green_count=escalation.green_count,
        last_review=None if previous is None else previous.last_review,
        next_review=upcoming,
        error=error,
        # the reminder schedule belongs to the episode: a new one starts it again
        reminders_sent=previous.reminders_sent
        if previous is not None and previous.since == effective.since
        else 0,
        verdict=effective.status,
        data_problem=problem,
        plan=plan,
    )
    events = notices + _events(
        kpi, basis, previous, state, now, effective.changed, escalation.escalated,
        escalation.de_escalated,
    )  # fmt: skip
    return Evaluation(
        kpi_id=kpi.id,
        at=now,
        value=value,
        observed_at=observed_at,
        raw_status=raw,
        findings=findings,
        state=state,
        events=events,
    )


def _events(
    kpi: Kpi,
    basis: KpiState | None,
    previous: KpiState | None,
    state: KpiState,
    now: datetime,
    changed: bool,
    escalated: bool,
    de_escalated: bool,
) -> tuple[Event, ...]:
    """``status_changed``, ``escalated``, ``de_escalated``, in that order, as they apply.

    ``basis`` is the last verdict's state (a change is from that verdict, never from
    a blind spell's unknown), ``previous`` the state just before.
    """
    kpi_id = state.kpi_id
    status = state.status
    review: ReviewCadence = state.review
    value = state.value
    reasons = state.reasons
    events: list[Event] = []
    if changed and (basis is not None or status is not Status.GREEN):
        events.append(_event(EventKind.STATUS_CHANGED, kpi_id, now, {
            "from": None if basis is None else basis.status.value,
            "to": status.value,
            "value": value,
            "unit": kpi.unit,
            **_plan(state),
            "reasons": list(reasons),
            "first": basis is None,
            # the episode this change closes: a recovery replies in that episode's Slack thread
            "previous_since": None if basis is None else basis.since.isoformat(),
        }))  # fmt: skip
    if escalated:
        events.append(_event(EventKind.ESCALATED, kpi_id, now, {
            "since": state.since.isoformat(),  # the episode it belongs to (Slack threads)
            "review": review.value,
            "from_review": kpi.review.value,
            "status": status.value,
            "value": value,
            "unit": kpi.unit,
            **_plan(state),
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
            # what the KPI was when it happened: a delayed message must not show a later state
            "status": status.value,
            "value": value,
            "unit": kpi.unit,
            **_plan(state),
            "reasons": list(reasons),
        }))  # fmt: skip
    return tuple(events)


def _plan(state: KpiState) -> dict[str, object]:
    """The judged period's plan, for a KPI with one: a message tells its own event's plan,
    not the plan of a later period judged by delivery time."""
    return {} if state.plan is None else {"plan": state.plan}


def _event(kind: EventKind, kpi_id: str, now: datetime, data: dict[str, object]) -> Event:
    """An event keyed by KPI, kind and moment: evaluating the same moment twice stores it once."""
    return Event(kind=kind, key=f"{kpi_id}:{kind.value}:{now.isoformat()}", at=now,
                 kpi_id=kpi_id, data=data)  # fmt: skip
