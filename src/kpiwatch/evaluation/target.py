"""Targets with a deadline: the glide path and the least-squares projection.

A target ``value`` with ``by`` defines a glide path: a straight line from
``baseline`` at ``baseline_date`` (default: the first observation's value and
time) to ``value`` at ``by``; before the baseline the expected value is the
baseline, from ``by`` on it is the target. Calendar dates mean the start of that
day in the configured timezone.

``off_track`` fires when

* the judged value is worse than the glide path at the time it was observed
  (not at "now": a weekly value must not drift off track between two
  measurements only because the clock moved on), or
* before ``by``: a least-squares line through the *recent* history projects a
  value worse than the target at ``by``. Recent means the observations within
  :data:`WINDOW` before the judged one, at most :data:`MAX_POINTS` of them (the
  newest); with fewer than :data:`MIN_POINTS` there is no projection.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from kpiwatch.evaluation.format import fmt_pair, fmt_value, with_unit
from kpiwatch.model import Finding, Observation, Status

RULE = "off_track"
WINDOW = timedelta(days=90)
MAX_POINTS = 26  # half a year of weekly values
MIN_POINTS = 3

_WINDOW_DAYS = WINDOW.total_seconds() / 86_400.0
_MIDNIGHT = time(0, 0)


@lru_cache(maxsize=4096)  # pure, keyed by value: a few target dates x timezones
def day_start(day: date, tz: ZoneInfo) -> float:
    """The POSIX timestamp of the start of ``day`` in ``tz``."""
    return datetime.combine(day, _MIDNIGHT, tzinfo=tz).timestamp()


def glide_expected(
    at: float, baseline: float, baseline_at: float, target: float, by: float
) -> float:
    """The glide path's expected value at timestamp ``at``."""
    if at >= by or baseline_at >= by:
        return target
    if at <= baseline_at:
        return baseline
    return baseline + (target - baseline) * (at - baseline_at) / (by - baseline_at)


def projection(
    history: Sequence[Observation], by: float, last_at: float | None = None
) -> float | None:
    """The least-squares fit of the recent history, evaluated at timestamp ``by``.

    None when the recent history has fewer than :data:`MIN_POINTS` points or
    they were all observed at the same moment. ``last_at`` is the timestamp of
    the newest point, when the caller has it already.
    """
    n_all = len(history)
    if n_all < MIN_POINTS:
        return None
    if last_at is None:
        last_at = history[-1].observed_at.timestamp()
    # one pass of plain sums; x is in days before the newest point, which keeps the
    # sums small and well conditioned (the spread of x is of the order of x itself).
    # The newest point has x == 0: its terms are folded in without a timestamp.
    n = 1
    sx = sxx = sxy = 0.0
    sy = 0.0 + history[-1].value
    window = -_WINDOW_DAYS
    for observation in reversed(history[-MAX_POINTS:-1]):
        x = (observation.observed_at.timestamp() - last_at) / 86_400.0
        if x < window:
            break
        y = observation.value
        n += 1
        sx += x
        sy += y
        sxx += x * x
        sxy += x * y
    if n < MIN_POINTS:
        return None
    var = sxx - sx * sx / n
    if var <= 1e-12:  # all at (almost) the same moment: no line
        return None
    slope = (sxy - sx * sy / n) / var
    return sy / n + slope * ((by - last_at) / 86_400.0 - sx / n)


def _worse(value: float, reference: float, lower_is_better: bool) -> bool:
    # a hair of tolerance: the glide path is computed, the value is not
    slack = 1e-9 * max(1.0, abs(reference))
    return value > reference + slack if lower_is_better else value < reference - slack


def off_track(
    history: Sequence[Observation],
    now: datetime,
    target: float,
    by: date,
    baseline: float | None,
    baseline_date: date | None,
    lower_is_better: bool,
    severity: Status,
    unit: str,
    tz: ZoneInfo,
) -> list[Finding]:
    """Off-track findings for the last observation of ``history`` (empty when on track)."""
    if not history:
        return []
    current = history[-1]
    at = current.observed_at.timestamp()
    by_at = day_start(by, tz)
    base_value = history[0].value if baseline is None else baseline
    base_at = (
        history[0].observed_at.timestamp()
        if baseline_date is None
        else day_start(baseline_date, tz)
    )
    findings: list[Finding] = []
    expected = glide_expected(at, base_value, base_at, target, by_at)
    if _worse(current.value, expected, lower_is_better):
        shown, shown_expected = fmt_pair(current.value, expected)
        goal = f"target {fmt_value(target, unit)} by {by.isoformat()}"
        if at >= by_at:
            reason = f"missed target: {with_unit(shown, unit)}, {goal}"
        else:
            day = current.observed_at.astimezone(tz).date()
            when = "today" if day == now.astimezone(tz).date() else day.isoformat()
            reason = (
                f"behind glide path: {with_unit(shown, unit)} vs "
                f"{with_unit(shown_expected, unit)} expected by {when} ({goal})"
            )
        findings.append(Finding(RULE, severity, reason))
    if at < by_at:
        projected = projection(history, by_at, at)
        if projected is not None and _worse(projected, target, lower_is_better):
            shown_projected, shown_target = fmt_pair(projected, target)
            findings.append(Finding(
                RULE,
                severity,
                f"projected {with_unit(shown_projected, unit)} by {by.isoformat()}, "
                f"target {with_unit(shown_target, unit)}",
            ))  # fmt: skip
    return findings
