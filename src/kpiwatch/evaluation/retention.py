"""How much of a KPI's stored history the retention keeps (``KPIWATCH_RETENTION``).

The retention bounds the observations table: without it a daemon polling 10,000 KPIs
every minute stores 14 million rows a day for ever (issue 15). It never changes a
verdict: a KPI keeps at least what its evaluation reads (:func:`history_points`,
:func:`history_window`), so the daemon judges the same with or without it. What it
takes away is older history for the pages, ``kpiwatch history`` and backtests.

Pure: the store deletes by :class:`Kept`, the runner stores a poll's points by it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from kpiwatch.config.rules import Kpi
from kpiwatch.evaluation.evaluate import history_points, history_window
from kpiwatch.model import Kept, Observation


def kept_history(kpi: Kpi, now: datetime, retention: timedelta) -> Kept:
    """What of ``kpi``'s history a retention of ``retention`` keeps at ``now``.

    A KPI judged on its newest points (thresholds, a worsening streak, the data checks)
    keeps those and the retention. One whose rules look back in time (``change``,
    ``seasonal``, off track, periods) keeps its whole evaluation window when that is
    longer: 400 days, 800 with a period.
    """
    points = history_points(kpi)
    if points is None:
        return Kept(now - max(retention, history_window(kpi)), 1)
    return Kept(now - retention, points)


def kept_removed(now: datetime, retention: timedelta) -> Kept:
    """What a KPI no longer in the rules keeps: the retention, no point more. No rule
    reads it; put back within the retention, it has its history again."""
    return Kept(now - retention, 0)


def retained(kept: Kept, points: Sequence[Observation]) -> list[Observation]:
    """The points of a poll that are stored, in their order: those :class:`Kept` keeps.

    A series source returns its whole result on every poll (a year of monthly rows,
    say): storing the part the retention drops would only have the next prune
    delete it again, every poll.
    """
    if not points or min(p.observed_at for p in points) >= kept.since:
        return list(points)
    ordered = sorted(points, key=lambda p: p.observed_at)
    newest = set(map(id, ordered[max(0, len(ordered) - kept.newest) :]))
    return [p for p in points if p.observed_at >= kept.since or id(p) in newest]
