"""Escalation: a KPI that turns red is reviewed more often until it has been stable green.

* When the effective status *becomes* red and the KPI is not escalated yet, the
  cadence in force becomes the more frequent of ``escalation.review`` and the
  KPI's own ``review``.
* It returns to the KPI's own cadence once the KPI has been green without a
  break for ``stable_for``: a duration (``now - green_since >= stable_for``) or
  a count of green evaluations (``green_count >= stable_for``).
* Yellow or unknown break the green run but do not end an escalation.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from kpiwatch.config.rules import Escalation
from kpiwatch.model import KpiState, ReviewCadence, Status


class EscalationStep(NamedTuple):
    """The escalation fields after one evaluation, and what happened."""

    review: ReviewCadence  # the cadence in force
    escalated_since: datetime | None
    green_since: datetime | None
    green_count: int
    escalated: bool  # escalated in this evaluation
    de_escalated: bool  # de-escalated in this evaluation


def more_frequent(a: ReviewCadence, b: ReviewCadence) -> ReviewCadence:
    """The more frequent of two cadences (lower rank)."""
    return a if a.rank <= b.rank else b


def step_escalation(
    escalation: Escalation,
    own_review: ReviewCadence,
    previous: KpiState | None,
    status: Status,
    changed: bool,
    now: datetime,
) -> EscalationStep:
    """Update the escalation of a KPI whose effective status is now ``status``.

    ``changed`` tells whether ``status`` is the result of a transition in this
    evaluation.
    """
    escalated_since = previous.escalated_since if previous is not None else None
    if status is not Status.GREEN:
        if changed and status is Status.RED and escalated_since is None:
            return EscalationStep(
                more_frequent(escalation.review, own_review), now, None, 0, True, False
            )
        review = (
            own_review if escalated_since is None else more_frequent(escalation.review, own_review)
        )
        return EscalationStep(review, escalated_since, None, 0, False, False)
    # green: extend the unbroken run, or start one
    if previous is not None and previous.status is Status.GREEN and not changed:
        green_since = previous.green_since or now
        green_count = previous.green_count + 1
    else:
        green_since = now
        green_count = 1
    if escalated_since is None:
        return EscalationStep(own_review, None, green_since, green_count, False, False)
    stable_for = escalation.stable_for
    if isinstance(stable_for, int):
        stable = green_count >= stable_for
    else:
        stable = now - green_since >= stable_for
    if stable:
        return EscalationStep(own_review, None, green_since, green_count, False, True)
    return EscalationStep(
        more_frequent(escalation.review, own_review),
        escalated_since,
        green_since,
        green_count,
        False,
        False,
    )
