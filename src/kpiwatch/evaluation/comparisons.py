"""The change rule against a calendar period: ``vs: previous_period | same_period_last_year``.

``trend.change`` with ``over: 7d`` compares with the value a fixed duration ago;
for a KPI judged per period people compare with a named period instead: this
month against last month, or against the same month last year (which removes
the season: December is always December). The comparison period is found by
calendar arithmetic in the configured timezone and matched exactly, because a
"nearest" period would silently compare November with October.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from kpiwatch.evaluation.format import fmt_number, fmt_pct, fmt_value
from kpiwatch.evaluation.limits import worse_beyond
from kpiwatch.evaluation.periods import period_label, period_start, shift
from kpiwatch.model import Finding, Observation, Period, Status, Versus

RULE = "change"

_NOON = time(12, 0)


def _last_year(first: date, period: Period) -> date:
    """The first local day of the same calendar period one year before the one starting ``first``.

    Month and quarter: the same one a year earlier. Week: the ISO week with the same
    number in the previous ISO year, or when that year has no week 53, the week 364
    days earlier (52 weeks: the same weekday). Day: the same date, Feb 29 -> Feb 28.
    """
    if period is Period.DAY:
        if first.month == 2 and first.day == 29:
            return date(first.year - 1, 2, 28)
        return first.replace(year=first.year - 1)
    if period is Period.WEEK:
        iso = first.isocalendar()
        try:
            return date.fromisocalendar(iso.year - 1, iso.week, 1)
        except ValueError:  # week 53, and the year before had 52
            return first - timedelta(days=364)
    return date(first.year - 1, first.month, 1)  # a month or a quarter: starts on a 1st


def comparison_start(judged_start: datetime, vs: Versus, period: Period, tz: ZoneInfo) -> datetime:
    """The UTC start of the period the one starting ``judged_start`` is compared with."""
    if vs is Versus.PREVIOUS_PERIOD:
        return shift(judged_start, period, tz, -1)
    first = period_start(judged_start, period, tz).astimezone(tz).date()
    noon = datetime.combine(_last_year(first, period), _NOON, tzinfo=tz)  # noon always exists
    return period_start(noon, period, tz)


def _observed_at(observation: Observation) -> datetime:
    return observation.observed_at


def _exactly_at(periods: Sequence[Observation], start: datetime) -> Observation | None:
    """The row of ``periods`` (ascending) observed exactly at ``start``; the last of equals."""
    index = bisect_left(periods, start, key=_observed_at)
    found = None
    while index < len(periods) and periods[index].observed_at == start:
        found = periods[index]
        index += 1
    return found


def change_vs(
    periods: Sequence[Observation],
    judged_start: datetime,
    judged_value: float,
    vs: Versus,
    period: Period,
    tz: ZoneInfo,
    max_pct: float | None,
    max_abs: float | None,
    lower_is_better: bool,
    severity: Status,
    unit: str,
) -> Finding | None:
    """Fires when the judged period's value is worse than the comparison period's by too much.

    ``periods`` is :func:`kpiwatch.evaluation.periods.bucket`'s output and
    ``judged_value`` the value being judged (a projection for an open period judged
    on pace). The comparison period's value is the row observed exactly at its
    start; with none the rule is silent, like ``trends.change`` without history.
    ``max_pct`` is relative to ``abs(old)`` and skips an old value of 0;
    ``max_abs`` is in the KPI's unit. The reason names the period compared with:
    "down 12 % vs Nov 2025 (1,310,000 $), more than 10 %".
    """
    start = comparison_start(judged_start, vs, period, tz)
    old_row = _exactly_at(periods, start)
    if old_row is None:
        return None
    old = old_row.value
    beyond = worse_beyond(judged_value, old, lower_is_better, max_pct, max_abs)
    if beyond is None:
        return None
    # worded only when it fires
    if max_pct is not None:
        amount, limit = fmt_pct(beyond), f"{fmt_number(max_pct)} %"
    else:
        amount, limit = fmt_value(beyond, unit), fmt_value(max_abs or 0.0, unit)
    word = "up" if judged_value > old else "down"
    label = period_label(start, period, tz)
    return Finding(
        RULE, severity, f"{word} {amount} vs {label} ({fmt_value(old, unit)}), more than {limit}"
    )
