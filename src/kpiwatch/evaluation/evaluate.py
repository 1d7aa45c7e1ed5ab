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
from datetime import datetime, time
from zoneinfo import ZoneInfo

from kpiwatch.config.rules import Kpi
from kpiwatch.evaluation.escalation import step_escalation
from kpiwatch.evaluation.format import fmt_age, fmt_span, fmt_value
from kpiwatch.evaluation.hysteresis import apply_hysteresis
from kpiwatch.evaluation.review import next_review
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
    Status,
)

_UTC = ZoneInfo("UTC")
_NINE = time(9, 0)
_GREEN = Status.GREEN
_UNKNOWN = Status.UNKNOWN


def judge_value(
    kpi: Kpi, history: Sequence[Observation], now: datetime, tz: ZoneInfo
) -> list[Finding]:
    """The yellow/red findings of the value rules for the last observation of ``history``."""
    findings: list[Finding] = []
    lower = kpi.direction is Direction.LOWER_IS_BETTER
    unit = kpi.unit
    thresholds = kpi.thresholds
    if thresholds is not None:
        finding = check_thresholds(
            history[-1].value, lower, thresholds.yellow, thresholds.red, unit
        )
        if finding is not None:
            findings.append(finding)
    trend = kpi.trend
    if trend is None:
        return findings
    streak = trend.worsening_streak
    if streak is not None:
        finding = worsening_streak(history, streak.count, lower, streak.severity, unit)
        if finding is not None:
            findings.append(finding)
    rule = trend.change
    if rule is not None:
        finding = change(
            history, now, rule.over, rule.max_pct, rule.max_abs, lower, rule.severity, unit
        )
        if finding is not None:
            findings.append(finding)
    target = kpi.target
    if trend.off_track is not None and target is not None and target.by is not None:
        findings.extend(
            off_track(
                history,
                now,
                target.value,
                target.by,
                target.baseline,
                target.baseline_date,
                lower,
                trend.off_track,
                unit,
                tz,
            )
        )
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
    kpi_id = kpi.id
    last = history[-1] if history else None
    judged: Observation | None = None
    problem = (
        None  # the usual case, without a call
        if error is None and (last is None or kpi.max_age is None)
        else _data_problem(kpi, last, now, error)
    )
    if problem is None and last is None:
        raw = _UNKNOWN
        findings: list[Finding] = [Finding("no_data", _UNKNOWN, "no data yet")]
    elif problem is not None and (kpi.no_data is not NoData.KEEP_LAST or last is None):
        raw = Status.RED if kpi.no_data is NoData.RED else _UNKNOWN
        findings = [Finding(problem[0], raw, problem[1])]
    else:
        assert last is not None
        judged = last
        rule_findings = judge_value(kpi, history, now, tz)
        raw = _GREEN
        for finding in rule_findings:
            if finding.status.severity > raw.severity:
                raw = finding.status
        # with keep_last, the data problem comes first: it qualifies everything after it
        findings = [] if problem is None else [Finding(problem[0], _UNKNOWN, problem[2])]
        if rule_findings:
            findings.extend(rule_findings)
        else:
            shown = fmt_value(last.value, kpi.unit)
            if kpi.thresholds is not None:
                reason = f"value {shown} within thresholds"
                findings.append(Finding("threshold", _GREEN, reason))
            else:
                findings.append(Finding("value", _GREEN, f"value {shown}, all rules pass"))

    hyst = apply_hysteresis(previous, raw, kpi.for_, now)
    status = hyst.status
    esc = step_escalation(kpi.escalation, kpi.review, previous, status, hyst.changed, now)
    review = esc.review

    if previous is None or previous.next_review is None or previous.review is not review:
        upcoming = next_review(review, now, tz, kpi.review_time or review_time)
    else:
        upcoming = previous.next_review

    value = None if judged is None else judged.value
    observed_at = None if judged is None else judged.observed_at
    reasons = tuple([f.reason for f in findings])
    # positional fast constructors (see kpiwatch.model): same objects as KpiState(...)
    state = KpiState(
        kpi_id,
        status,
        hyst.since,
        review,
        hyst.pending_status,
        hyst.pending_count,
        value,
        observed_at,
        reasons,
        now,  # last_evaluated
        esc.escalated_since,
        esc.green_since,
        esc.green_count,
        None if previous is None else previous.last_review,
        upcoming,  # next_review
        error,
    )

    events: list[Event] = []
    if hyst.changed and (previous is not None or status is not _GREEN):
        events.append(_event(EventKind.STATUS_CHANGED, kpi_id, now, {
            "from": None if previous is None else previous.status.value,
            "to": status.value,
            "value": value,
            "unit": kpi.unit,
            "reasons": list(reasons),
            "first": previous is None,
        }))  # fmt: skip
    if esc.escalated:
        events.append(_event(EventKind.ESCALATED, kpi_id, now, {
            "since": state.since.isoformat(),  # the episode it belongs to (Slack threads)
            "review": review.value,
            "from_review": kpi.review.value,
            "status": status.value,
            "value": value,
            "unit": kpi.unit,
            "reasons": list(reasons),
        }))  # fmt: skip
    if esc.de_escalated:
        assert previous is not None
        assert previous.escalated_since is not None
        events.append(_event(EventKind.DE_ESCALATED, kpi_id, now, {
            "since": state.since.isoformat(),
            "review": review.value,
            "from_review": previous.review.value,
            "escalated_since": previous.escalated_since.isoformat(),
            "green_since": None if esc.green_since is None else esc.green_since.isoformat(),
            "green_count": esc.green_count,
        }))  # fmt: skip

    return Evaluation(
        kpi_id, now, value, observed_at, raw, tuple(findings), state, tuple(events)
    )


def _event(kind: EventKind, kpi_id: str, now: datetime, data: dict[str, object]) -> Event:
    """An event keyed by KPI, kind and moment: evaluating the same moment twice stores it once."""
    return Event(kind=kind, key=f"{kpi_id}:{kind.value}:{now.isoformat()}", at=now,
                 kpi_id=kpi_id, data=data)  # fmt: skip
