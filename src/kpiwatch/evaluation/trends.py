"""Trend rules on the recent history: a streak of worsening, and too large a change.

``history`` is always ascending by ``observed_at`` and its last item is the value
being judged.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from datetime import datetime, timedelta

from kpiwatch.evaluation.format import fmt_number, fmt_series, fmt_span, fmt_value, with_unit
from kpiwatch.evaluation.limits import worse_beyond
from kpiwatch.model import Finding, Observation, Status


def _observed_at(observation: Observation) -> datetime:
    return observation.observed_at


def worsening_streak(
    history: Sequence[Observation],
    count: int,
    lower_is_better: bool,
    severity: Status,
    unit: str,
) -> Finding | None:
    """Fires when the last ``count`` changes all moved the worse way (equal is not worse).

    Needs ``count + 1`` observations; with fewer it stays silent.
    """
    if len(history) <= count:
        return None
    values = [o.value for o in history[-(count + 1) :]]
    previous = values[0]
    for value in values[1:]:
        if (value <= previous) if lower_is_better else (value >= previous):
            return None
        previous = value
    times = "once" if count == 1 else f"{count} times in a row"
    series = " → ".join(fmt_series(values))
    return Finding("worsening_streak", severity, f"worse {times} ({with_unit(series, unit)})")


def value_at_or_before(history: Sequence[Observation], moment: datetime) -> Observation | None:
    """The latest observation at or before ``moment``, if any."""
    if len(history) >= 2 and history[-2].observed_at <= moment <= history[-1].observed_at:
        return history[-2]  # the usual case: ``over`` is about one sampling interval
    index = bisect_right(history, moment, key=_observed_at)
    return history[index - 1] if index else None


def change(
    history: Sequence[Observation],
    now: datetime,
    over: timedelta,
    max_pct: float | None,
    max_abs: float | None,
    lower_is_better: bool,
    severity: Status,
    unit: str,
) -> Finding | None:
    """Fires when the value got worse than the value ``over`` ago by more than the limit.

    The old value is the latest observation at or before ``now - over``; with none
    (not enough history) the rule is silent. ``max_pct`` is relative to ``abs(old)``
    and skips an old value of 0; ``max_abs`` is in the KPI's unit.
    """
    if not history:
        return None
    current = history[-1]
    cutoff = now - over
    if current.observed_at <= cutoff:
        return None  # the value "over ago" is the current one: no change to judge
    old = value_at_or_before(history, cutoff)
    if old is None:
        return None
    beyond = worse_beyond(current.value, old.value, lower_is_better, max_pct, max_abs)
    if beyond is None:
        return None
    # worded only when it fires: most evaluations never need the text
    if max_pct is not None:
        amount, limit = f"{beyond:.1f} %", f"{fmt_number(max_pct)} %"
    else:
        amount, limit = fmt_value(beyond, unit), fmt_value(max_abs or 0.0, unit)
    word = "up" if current.value > old.value else "down"
    old_text, new_text = fmt_series([old.value, current.value])
    return Finding(
        "change",
        severity,
        f"{word} {amount} in {fmt_span(over)} "
        f"({old_text} → {with_unit(new_text, unit)}), more than {limit}",
    )
