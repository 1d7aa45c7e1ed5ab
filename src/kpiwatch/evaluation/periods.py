"""Calendar periods: a KPI judged per day, week, month or quarter instead of per point.

Periods are local to the configured timezone (``KPIWATCH_TIMEZONE``) because
that is where people's days and months begin: a ride at 23:30 UTC on a Monday
is Tuesday's ride in Berlin. Weeks start on Monday (ISO). Every instant crossing
this module's boundary is an aware UTC datetime; local time is used only for the
calendar arithmetic, so a local day may be 23 or 25 hours long across DST.

A period starts at local midnight of its first day. When midnight does not exist
(a DST gap at midnight, as in Santiago or Havana) zoneinfo's ``fold=0`` maps it to
the instant of the transition, which is the first instant of that day anyway.

The rows a query returns are either one per period (``aggregate`` None: the
query did the grouping) or raw points that :func:`bucket` folds per period. A
period is closed once its end plus ``complete_after`` has passed: late data is
common (a nightly ETL), and judging a half-loaded day is judging the ETL.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import NamedTuple
from zoneinfo import ZoneInfo

# the enums are the rules' vocabulary too: they live with the other plain data
from kpiwatch.model import Aggregate, Observation, Period

# Below this share of the period elapsed, an open period is not judged: a
# month-to-date total after 20 minutes, projected to the month, is noise.
MIN_FRACTION = 0.01

# Aggregates that are running totals: the open period's value grows with time,
# so it is judged on pace (projected to the period's end) rather than as is.
_RUNNING_TOTALS = frozenset({Aggregate.SUM, Aggregate.COUNT})

_MIDNIGHT = time(0, 0)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


# ---------------------------------------------------------------- calendar arithmetic


def first_day(day: date, period: Period) -> date:
    """The local date on which the period containing ``day`` starts (reviews fall due on
    the same calendar: :mod:`kpiwatch.evaluation.review`)."""
    if period is Period.DAY:
        return day
    if period is Period.WEEK:
        return day - timedelta(days=day.weekday())
    if period is Period.MONTH:
        return day.replace(day=1)
    return date(day.year, (day.month - 1) // 3 * 3 + 1, 1)


def add_periods(first: date, period: Period, n: int) -> date:
    """The first day of the period ``n`` periods after the one starting on ``first``."""
    if period is Period.DAY:
        return first + timedelta(days=n)
    if period is Period.WEEK:
        return first + timedelta(days=7 * n)
    month0 = first.month - 1 + n * (1 if period is Period.MONTH else 3)
    return date(first.year + month0 // 12, month0 % 12 + 1, 1)


@lru_cache(maxsize=4096)  # pure, keyed by value: bucketing asks for the same few days a lot
def _local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """The UTC instant at which ``day`` starts in ``tz``."""
    return datetime.combine(day, _MIDNIGHT, tzinfo=tz).astimezone(UTC)


def _localfirst_day(moment: datetime, period: Period, tz: ZoneInfo) -> date:
    return first_day(moment.astimezone(tz).date(), period)


def period_start(moment: datetime, period: Period, tz: ZoneInfo) -> datetime:
    """The UTC instant at which the local period containing ``moment`` starts.

    That is local midnight of the day, of its Monday, of the 1st of its month, or
    of the 1st of January, April, July or October, as an aware UTC datetime.
    """
    return _local_midnight(_localfirst_day(moment, period, tz), tz)


def shift(start: datetime, period: Period, tz: ZoneInfo, n: int) -> datetime:
    """The start of the period ``n`` periods after (negative: before) the one containing ``start``.

    The arithmetic is on local calendar dates, not on durations: a local day may
    be 23 or 25 hours and a month 28 to 31 days, and "the next day" must still
    begin at midnight.
    """
    return _local_midnight(add_periods(_localfirst_day(start, period, tz), period, n), tz)


def period_end(start: datetime, period: Period, tz: ZoneInfo) -> datetime:
    """The end of the period containing ``start``: the next period's start (exclusive)."""
    return shift(start, period, tz, 1)


# ---------------------------------------------------------------- bucketing


def _fold(values: list[float], aggregate: Aggregate) -> float:
    """One period's raw values (ascending by time) folded into its value."""
    if aggregate is Aggregate.SUM:
        return math.fsum(values)  # exact: the order of the rows cannot change the total
    if aggregate is Aggregate.AVG:
        return math.fsum(values) / len(values)
    if aggregate is Aggregate.LAST:
        return values[-1]
    if aggregate is Aggregate.MIN:
        return min(values)
    if aggregate is Aggregate.MAX:
        return max(values)
    return float(len(values))


def bucket(
    history: Sequence[Observation], period: Period, tz: ZoneInfo, aggregate: Aggregate | None
) -> list[Observation]:
    """One observation per period that has rows, ``observed_at`` its start (UTC), ascending.

    With ``aggregate`` None the rows are already one per period (the query grouped
    them): each row goes to the period containing its timestamp, and when several
    fall into one period the latest by time wins (a re-run of the query that
    corrected the number). Otherwise the raw points of each period are folded:
    sum, avg (mean), last (latest by time), min, max, or count (number of rows).

    Empty periods in between stay absent rather than zero-filled: "no rows" may mean
    "nothing happened" or "nothing loaded", and only the latter is not a zero.
    Rows with equal timestamps keep their input order (the later row is "last").
    """
    if not history:
        return []
    rows = sorted(history, key=_observed_at)  # stable: equal times keep their order
    groups: dict[datetime, list[float]] = {}
    kpi_id = rows[-1].kpi_id
    for row in rows:
        groups.setdefault(period_start(row.observed_at, period, tz), []).append(row.value)
    return [
        Observation(kpi_id, start, values[-1] if aggregate is None else _fold(values, aggregate))
        for start, values in sorted(groups.items())
    ]


def _observed_at(observation: Observation) -> datetime:
    return observation.observed_at


# ---------------------------------------------------------------- judging


def is_closed(
    start: datetime, period: Period, tz: ZoneInfo, complete_after: timedelta, now: datetime
) -> bool:
    """Whether the period's data is final: its end plus ``complete_after`` is not after ``now``.

    Exactly at that moment counts as closed, so a daily check scheduled for
    00:00 + complete_after judges the day that just ended, not the one before.
    """
    return period_end(start, period, tz) + complete_after <= now


class Judged(NamedTuple):
    """The period a rule judges, and the value it is judged on."""

    start: datetime  # the judged period's start (UTC)
    end: datetime  # its end (the next period's start, UTC)
    value: float  # the value judged: the period's value, or its projection when on pace
    actual: float  # the period's value so far (== value for a closed period)
    closed: bool
    fraction: float  # share of the period elapsed at ``now`` (1.0 when closed)


def judged_period(
    periods: Sequence[Observation],
    period: Period,
    tz: ZoneInfo,
    complete_after: timedelta,
    now: datetime,
    *,
    current: bool,
    aggregate: Aggregate | None,
    min_fraction: float = MIN_FRACTION,
) -> Judged | None:
    """The period to judge in ``periods`` (:func:`bucket`'s output), or None when there is none.

    ``current`` False: the latest closed period; a period that ended but is still
    within ``complete_after`` is skipped, not judged on partial data.

    ``current`` True: the open period containing ``now`` (None while it has no
    value). A running total (sum, count) is judged on pace: the value so far
    divided by the share of the period elapsed, i.e. projected linearly to the
    period's end, so that month-to-date revenue can be compared with a monthly
    threshold on the 10th. Averages, extremes, the last value and rows the query
    aggregated itself do not grow with time and are judged as they are. While less
    than ``min_fraction`` of the period has passed nothing is judged: the first
    minutes of a month would project any sale into a fortune or a disaster.
    """
    if current:
        start = period_start(now, period, tz)
        row = _at(periods, start, period, tz)
        if row is None:
            return None
        end = period_end(start, period, tz)
        fraction = (now - start) / (end - start)  # < 1: ``now`` is before the end
        if fraction < min_fraction:
            return None
        actual = row.value
        value = actual / fraction if aggregate in _RUNNING_TOTALS else actual
        return Judged(start, end, value, actual, False, fraction)
    for row in reversed(periods):
        start = period_start(row.observed_at, period, tz)
        if is_closed(start, period, tz, complete_after, now):
            end = period_end(start, period, tz)
            return Judged(start, end, row.value, row.value, True, 1.0)
    return None


def _at(
    periods: Sequence[Observation], start: datetime, period: Period, tz: ZoneInfo
) -> Observation | None:
    """The row of the period starting at ``start``, searched from the newest (usually last)."""
    for row in reversed(periods):
        row_start = period_start(row.observed_at, period, tz)
        if row_start == start:
            return row
        if row_start < start:
            return None
    return None


# ---------------------------------------------------------------- labels and plan keys


def period_label(start: datetime, period: Period, tz: ZoneInfo, *, short: bool = False) -> str:
    """The period as people name it, in English whatever the locale (reasons are English).

    day "2026-11-03" (short "3 Nov"); week "week of 2026-11-02" (short "W45", the
    ISO week, zero-padded like "W05"); month "Nov 2026" (short "Nov"); quarter
    "Q4 2026" (short "Q4"). Short labels are for charts, where the year is on the axis.
    """
    first = _localfirst_day(start, period, tz)
    if period is Period.DAY:
        return f"{first.day} {_MONTHS[first.month - 1]}" if short else first.isoformat()
    if period is Period.WEEK:
        return f"W{first.isocalendar().week:02d}" if short else f"week of {first.isoformat()}"
    if period is Period.MONTH:
        month = _MONTHS[first.month - 1]
        return month if short else f"{month} {first.year}"
    quarter = f"Q{(first.month - 1) // 3 + 1}"
    return quarter if short else f"{quarter} {first.year}"


def plan_key(start: datetime, period: Period, tz: ZoneInfo) -> str:
    """The key a per-period plan uses for the period containing ``start``.

    day "2026-11-03", week "2026-W45" (ISO year and week: the week of Monday
    2024-12-30 is "2025-W01"), month "2026-11", quarter "2026-Q4".
    """
    first = _localfirst_day(start, period, tz)
    if period is Period.DAY:
        return first.isoformat()
    if period is Period.WEEK:
        iso = first.isocalendar()
        return f"{iso.year:04d}-W{iso.week:02d}"
    if period is Period.MONTH:
        return f"{first.year:04d}-{first.month:02d}"
    return f"{first.year:04d}-Q{(first.month - 1) // 3 + 1}"


_KEY_FORMATS = {
    Period.DAY: "a day (YYYY-MM-DD)",
    Period.WEEK: "an ISO week (YYYY-Www)",
    Period.MONTH: "a month (YYYY-MM)",
    Period.QUARTER: "a quarter (YYYY-Qn)",
}


def parse_plan_key(key: str, period: Period, tz: ZoneInfo) -> datetime:
    """The UTC start of the period a plan key names: the inverse of :func:`plan_key`.

    Only the canonical form is accepted ("2026-W05", not "2026-w5"), so that two
    spellings of one period cannot both appear in a plan. A key that does not fit
    raises ValueError with a message for the person who wrote the config, such as
    "plan key '2026-13' is not a month (YYYY-MM)".
    """
    first = _plan_key_day(key, period)
    if first is None:
        detail = ""
        if period is Period.WEEK and key[4:] == "-W53" and _is_digits(key[:4]):
            detail = f": {key[:4]} has 52 ISO weeks"
        raise ValueError(f"plan key {key!r} is not {_KEY_FORMATS[period]}{detail}")
    try:
        return _local_midnight(first, tz)
    except OverflowError:  # year 1 east of UTC starts in year 0
        raise ValueError(f"plan key {key!r} is out of range") from None


def _plan_key_day(key: str, period: Period) -> date | None:
    """The first local day a plan key names, or None when it does not fit the period."""
    year, dash, rest = key.partition("-")
    if not dash or len(year) != 4 or not _is_digits(year):
        return None
    y = int(year)
    try:
        if period is Period.DAY:
            month, dash, day = rest.partition("-")
            if dash and len(month) == len(day) == 2 and _is_digits(month + day):
                return date(y, int(month), int(day))
        elif period is Period.WEEK:
            week = rest[1:]
            if rest[:1] == "W" and len(week) == 2 and _is_digits(week):
                return date.fromisocalendar(y, int(week), 1)
        elif period is Period.MONTH:
            if len(rest) == 2 and _is_digits(rest):
                return date(y, int(rest), 1)
        elif len(rest) == 2 and rest[0] == "Q" and rest[1] in "1234":  # a quarter
            return date(y, (int(rest[1]) - 1) * 3 + 1, 1)
    except ValueError:  # year 0, month 13, Feb 30, week 53 of a 52-week year
        return None
    return None


def _is_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()
