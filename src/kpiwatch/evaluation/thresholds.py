"""Thresholds: the minimum acceptable performance of a KPI.

``lower_is_better``: red when value > red, else yellow when value > yellow.
``higher_is_better``: red when value < red, else yellow when value < yellow.
A value equal to a threshold is acceptable; either threshold may be omitted.
"""

from __future__ import annotations

from kpiwatch.evaluation.format import fmt_pair, with_unit
from kpiwatch.model import Finding, Status

RULE = "threshold"


def threshold_status(
    value: float, lower_is_better: bool, yellow: float | None, red: float | None
) -> Status:
    """The status the thresholds give ``value`` (green when none is crossed)."""
    if lower_is_better:
        if red is not None and value > red:
            return Status.RED
        if yellow is not None and value > yellow:
            return Status.YELLOW
    else:
        if red is not None and value < red:
            return Status.RED
        if yellow is not None and value < yellow:
            return Status.YELLOW
    return Status.GREEN


def check_thresholds(
    value: float, lower_is_better: bool, yellow: float | None, red: float | None, unit: str
) -> Finding | None:
    """A red or yellow finding such as ``value 5.8 % > red 5.5 %``; None when green."""
    status = threshold_status(value, lower_is_better, yellow, red)
    if status is Status.GREEN:
        return None
    limit = red if status is Status.RED else yellow
    assert limit is not None  # a crossed threshold exists
    shown, shown_limit = fmt_pair(value, limit)
    sign = ">" if lower_is_better else "<"
    return Finding(
        RULE,
        status,
        f"value {with_unit(shown, unit)} {sign} {status.value} {with_unit(shown_limit, unit)}",
    )
