"""Late data (SPEC §2a): a closed period whose value changes on a later poll is restated.

Both values are kept: the ``restated`` event records old -> new, and the
period is judged again with the new value. The owner hears only when the verdict
of the latest closed period changes, as an ordinary status change; the event
itself is recorded and shown (the KPI's page marks the period), not sent.

Pure: the runner passes the stored history and what the poll fetched.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from kpiwatch.config.rules import Kpi
from kpiwatch.evaluation.periods import bucket, is_closed, period_label
from kpiwatch.model import Event, EventKind, Observation


def restated_points(
    kpi: Kpi, stored: Sequence[Observation], fetched: Sequence[Observation]
) -> list[Observation]:
    """The fetched points of a period KPI that give a stored point a new value (the
    store replaces them). Other KPIs keep the first value of a point, as before."""
    if kpi.period is None or not fetched:
        return []
    known = {o.observed_at: o.value for o in stored}
    return [o for o in fetched if o.observed_at in known and known[o.observed_at] != o.value]


def restatements(
    kpi: Kpi,
    stored: Sequence[Observation],
    merged: Sequence[Observation],
    now: datetime,
    tz: ZoneInfo,
    since: datetime,
) -> tuple[Event, ...]:
    """One ``restated`` event per closed period whose value differs between the stored
    history and the history with this poll's points (``merged``). ``since`` is where
    the stored history was read from: a period starting before it was read in part."""
    period = kpi.period
    if period is None or len(merged) == len(stored) == 0:
        return ()
    before = {p.observed_at: p.value for p in bucket(stored, period, tz, kpi.aggregate)}
    events = []
    for point in bucket(merged, period, tz, kpi.aggregate):
        old = before.get(point.observed_at)
        if old is None or old == point.value or point.observed_at < since:
            continue
        if not is_closed(point.observed_at, period, tz, kpi.complete_after, now):
            continue  # an open period grows: that is no restatement
        start = point.observed_at.isoformat()
        events.append(Event(
            kind=EventKind.RESTATED, key=f"{kpi.id}:restated:{start}:{now.isoformat()}", at=now,
            kpi_id=kpi.id,
            data={"period": period_label(point.observed_at, period, tz), "period_start": start,
                  "old": old, "new": point.value, "unit": kpi.unit},
        ))  # fmt: skip
    return tuple(events)
