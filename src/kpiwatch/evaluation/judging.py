"""What a KPI's rules judge (SPEC §2a): its last value, or a period's, with the period's plan.

Without ``period`` the rules judge the last observation and see the raw history.
With one, the history is folded into one point per period
(:func:`~kpiwatch.evaluation.periods.bucket`) and the rules judge the last closed
period (``judge: closed``) or the open one on pace (``judge: current``); they see
the periods up to the judged one, never rows of a later, still open period.
Thresholds written in percent are resolved against the judged period's plan.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo

from kpiwatch.config.rules import Kpi, Thresholds
from kpiwatch.evaluation.format import fmt_value
from kpiwatch.evaluation.periods import bucket, judged_period, period_label, plan_key
from kpiwatch.model import Observation


class Judging(NamedTuple):
    """The point the rules judge and the series they see."""

    series: list[Observation]  # ascending; its last item is ``point``
    point: Observation
    label: str | None  # "Nov 2026: " style prefix of every reason; None without a period
    plan: float | None  # the judged period's plan, if the KPI has one


def judging(
    kpi: Kpi,
    history: Sequence[Observation],
    now: datetime,
    tz: ZoneInfo,
    plans: Mapping[str, float] | None = None,
    window: timedelta = timedelta(days=800),
) -> Judging | None:
    """The point to judge; None for a period KPI with no period to judge yet. ``window``
    is how far back the history was read: a period starting earlier is left out."""
    if not history:
        return None
    if kpi.period is None:
        return Judging(list(history), history[-1], None, None)
    # the history read starts mid-period, maybe: its first period is not whole
    since = now - window
    periods = [p for p in bucket(history, kpi.period, tz, kpi.aggregate) if p.observed_at >= since]
    current = kpi.judge == "current"
    judged = judged_period(periods, kpi.period, tz, kpi.complete_after, now,
                           current=current, aggregate=kpi.aggregate)  # fmt: skip
    if judged is None:
        return None
    point = Observation(kpi.id, judged.start, judged.value)
    series = [p for p in periods if p.observed_at < judged.start] + [point]
    plan = plan_for(kpi, judged.start, tz, plans)
    label = period_label(judged.start, kpi.period, tz)
    if not judged.closed:
        so_far = fmt_value(judged.actual, kpi.unit)
        last_day = (judged.end - timedelta(seconds=1)).astimezone(tz)
        on_pace = f"on pace for {fmt_value(judged.value, kpi.unit)} by {last_day:%-d %b}"
        label = f"{label} so far {so_far}, {on_pace}"
    return Judging(series, point, label, plan)


def plan_for(
    kpi: Kpi, start: datetime, tz: ZoneInfo, queried: Mapping[str, float] | None
) -> float | None:
    """The plan of the period starting at ``start``: from ``plan_query``'s rows (keyed
    like ``plan:``), else the inline ``plan``; None when neither has that period."""
    target = kpi.target
    if target is None or kpi.period is None:
        return None
    key = plan_key(start, kpi.period, tz)
    if target.plan_query is not None:
        return None if queried is None else queried.get(key)
    return None if target.plan is None else target.plan.get(key)


def resolved_thresholds(
    thresholds: Thresholds | None, plan: float | None
) -> tuple[float | None, float | None]:
    """(yellow, red) in the KPI's unit: as written, or percents of ``plan`` (both None
    when there is no plan for the period: nothing to judge against)."""
    if thresholds is None:
        return None, None
    if not thresholds.percent:
        return thresholds.yellow, thresholds.red
    if plan is None:
        return None, None
    yellow, red = thresholds.yellow, thresholds.red
    return (
        None if yellow is None else plan * yellow / 100.0,
        None if red is None else plan * red / 100.0,
    )
