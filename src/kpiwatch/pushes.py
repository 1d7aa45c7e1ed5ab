"""Pushed values: record one observation of a push KPI and evaluate it at once.

The one function both `kpiwatch push` and the HTTP API call.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from kpiwatch.config.rules import Kpi
from kpiwatch.errors import ConfigError
from kpiwatch.model import Evaluation, Observation
from kpiwatch.runtime.runner import Runner
from kpiwatch.store.repository import Store

# clocks differ a little; a value from further in the future is a mistake
MAX_FUTURE = timedelta(minutes=5)


class PushRejected(ConfigError):
    """A pushed value that cannot be recorded; nothing was stored."""


def record_push(
    runner: Runner, store: Store, kpi: Kpi, value: float, at: datetime, now: datetime
) -> Evaluation:
    """Store ``value`` at ``at`` for a push KPI, then evaluate it (and formulas over it)."""
    if kpi.source != "push":
        raise PushRejected(
            f"KPI {kpi.id!r} takes its values from source {kpi.source!r}, not from pushes"
        )
    if isinstance(value, bool) or not math.isfinite(value):
        raise PushRejected(f"value {value!r} for {kpi.id!r} is not a finite number")
    if at.tzinfo is None:
        raise PushRejected(f"time {at.isoformat()!r} has no timezone")
    if at > now + MAX_FUTURE:
        raise PushRejected(f"time {at.isoformat()} is in the future (now {now.isoformat()})")
    if store.add_observations([Observation(kpi.id, at, float(value))]) == 0:
        # a silent no-op would answer with the old value's verdict as if this one counted
        stored = [o.value for o in store.history(kpi.id, since=at) if o.observed_at == at]
        shown = f" ({stored[0]:g})" if stored else ""
        raise PushRejected(
            f"{kpi.id!r} already has a value at {at.isoformat()}{shown}; nothing changed"
        )
    evaluation = runner.evaluate_kpi(kpi.id)
    assert evaluation is not None  # the KPI is in the runner's rules
    return evaluation
