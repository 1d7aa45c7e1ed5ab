"""Hysteresis: the effective status follows the raw status only after ``for`` agreeing evaluations.

Like a Prometheus alert's ``for``: a raw status different from the effective one
becomes *pending*; it takes over once ``for`` consecutive evaluations agree on
it. A raw status equal to the effective one clears the pending one.

A KPI's first evaluation takes its raw status at once: ``for`` guards changes
of an established status, and a "pending" unknown for a brand-new KPI would
only page people twice (unknown, then the real status).
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from kpiwatch.model import KpiState, Status


class Hysteresis(NamedTuple):
    """The effective status after one evaluation."""

    status: Status
    since: datetime  # start of the episode
    pending_status: Status | None
    pending_count: int
    changed: bool  # the effective status differs from before (always True the first time)


def apply_hysteresis(
    previous: KpiState | None, raw: Status, for_: int, now: datetime
) -> Hysteresis:
    """Fold one raw status into the effective status of ``previous``."""
    if previous is None:
        return Hysteresis(raw, now, None, 0, True)
    current = previous.status
    if raw is current:
        return Hysteresis(current, previous.since, None, 0, False)
    count = previous.pending_count + 1 if previous.pending_status is raw else 1
    if count >= for_:
        return Hysteresis(raw, now, None, 0, True)
    return Hysteresis(current, previous.since, raw, count, False)
