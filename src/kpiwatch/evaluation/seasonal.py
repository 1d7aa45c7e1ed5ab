"""The seasonal trend rule: a value compared with the same moment of past seasons.

Many KPIs have a weekly (or daily, or yearly) rhythm: Tuesday's rides are not
comparable with Sunday's, and 03:00 traffic not with 14:00's. So the judged value
is compared with the values at the same offset 1..``seasons`` seasons back (for a
7-day season: 7, 14, 21 and 28 days before), and with their median rather than
their mean, so that one holiday among them does not move the baseline.

The rule does not guess: with fewer usable points back than ``seasons`` it says
so in a green note and does not fire.
"""

from __future__ import annotations

import statistics
from bisect import bisect_left
from collections.abc import Sequence
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from kpiwatch.evaluation.format import fmt_pair, fmt_pct, fmt_value, with_unit
from kpiwatch.evaluation.limits import worse_beyond
from kpiwatch.model import Finding, Observation, Period, Status

RULE = "seasonal"

# How far from "exactly k seasons back" a point may be and still count: enough for
# a period start that DST moved by an hour, never the neighbouring day of daily data.
MAX_TOLERANCE = timedelta(hours=3)

_DAY = timedelta(days=1)
_WEEK = timedelta(days=7)
_YEARS = (timedelta(days=365), timedelta(weeks=52))
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def tolerance(season: timedelta) -> timedelta:
    """How far a baseline point may be from its ideal time: ``min(season / 8, 3 hours)``."""
    return min(season / 8, MAX_TOLERANCE)


def _observed_at(observation: Observation) -> datetime:
    return observation.observed_at


def _nearest(
    history: Sequence[Observation], hi: int, moment: datetime, within: timedelta
) -> Observation | None:
    """The observation among ``history[:hi]`` nearest to ``moment``, if within ``within``.

    Of two equally near, the earlier one (deterministic).
    """
    index = bisect_left(history, moment, 0, hi, key=_observed_at)
    best: Observation | None = None
    for candidate in (index - 1, index):
        if 0 <= candidate < hi:
            observation = history[candidate]
            distance = abs(observation.observed_at - moment)
            if distance <= within and (best is None or distance < abs(best.observed_at - moment)):
                best = observation
    return best


def _season_noun(season: timedelta) -> str:
    """What one season is called in "not enough history (2 of 4 weeks)"."""
    if season == _WEEK:
        return "week"
    if season == _DAY:
        return "day"
    if season in _YEARS:
        return "year"
    return "season"


def _baseline(judged: datetime, season: timedelta, tz: ZoneInfo, period: Period | None) -> str:
    """What the baseline is the usual value of: "the usual Tuesday", "the usual 14:00"."""
    if period in (Period.WEEK, Period.MONTH, Period.QUARTER):
        return f"the usual {period}"  # a week's start is always a Monday: not worth saying
    local = judged.astimezone(tz)
    if season == _WEEK:
        return f"the usual {_WEEKDAYS[local.weekday()]}"
    if season == _DAY:
        return "the usual day" if period is Period.DAY else f"the usual {local:%H:%M}"
    return "the usual value"


def seasonal(
    history: Sequence[Observation],
    season: timedelta,
    seasons: int,
    max_pct: float | None,
    max_abs: float | None,
    lower_is_better: bool,
    severity: Status,
    unit: str,
    tz: ZoneInfo,
    *,
    period: Period | None = None,
) -> Finding | None:
    """Fires when the last value is worse than the median of the same moment of past seasons.

    ``history`` is ascending and its last item is judged. For k in 1..``seasons``
    the baseline point is the observation nearest to ``k * season`` before it,
    within :func:`tolerance`. With fewer than ``seasons`` found the result is a
    green note, "seasonal: not enough history (2 of 4 weeks)": silence would read
    as "looks normal" when the rule could not look at all.

    Otherwise the rule fires when the value is worse than the median, in the
    KPI's direction, by more than ``max_pct`` (relative to ``abs(median)``; a
    median of 0 is skipped) or ``max_abs`` (in the unit); ``max_pct`` wins when
    both are given, as in :func:`kpiwatch.evaluation.trends.change`.

    ``period`` (the KPI's period, if it has one) only words the reason: daily
    periods compared a week back are "the usual Tuesday", weekly ones "the usual
    week"; without it each observation is a point and a 1-day season names the
    local time of day ("the usual 14:00").
    """
    if not history or seasons < 1:  # the config allows neither
        return None
    judged = history[-1]
    within = tolerance(season)
    last = len(history) - 1
    found: list[float] = []
    for k in range(1, seasons + 1):
        point = _nearest(history, last, judged.observed_at - season * k, within)
        if point is not None:
            found.append(point.value)
    noun = _season_noun(season)
    if len(found) < seasons:
        plural = noun if seasons == 1 else f"{noun}s"
        return Finding(
            RULE, Status.GREEN, f"seasonal: not enough history ({len(found)} of {seasons} {plural})"
        )
    median = statistics.median(found)
    beyond = worse_beyond(judged.value, median, lower_is_better, max_pct, max_abs)
    if beyond is None:
        return None
    # worded only when it fires
    amount = fmt_pct(beyond) if max_pct is not None else fmt_value(beyond, unit)
    shown, usual = fmt_pair(judged.value, median)
    word = "above" if judged.value > median else "below"
    basis = f"median of {len(found)}" if len(found) > 1 else f"1 {noun} back"
    baseline = _baseline(judged.observed_at, season, tz, period)
    return Finding(
        RULE,
        severity,
        f"{with_unit(shown, unit)}, {amount} {word} {baseline} ({usual}, {basis})",
    )
