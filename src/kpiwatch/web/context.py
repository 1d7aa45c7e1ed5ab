"""What the web app reads and calls: passed in by the composition root, no globals."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from kpiwatch.clock import Clock
from kpiwatch.config.rules import RuleSet
from kpiwatch.config.settings import Settings
from kpiwatch.runtime.runner import Runner
from kpiwatch.store.repository import Store


@dataclass(frozen=True)
class WebContext:
    store: Store
    rules: Callable[[], RuleSet]  # the rules running now (reload swaps them)
    settings: Settings
    clock: Clock
    runner: Runner  # pushed observations are evaluated at once through it
    registry: CollectorRegistry  # what /metrics serves
    heartbeat: Callable[[], float | None]  # monotonic time of the scheduler's last tick
    heartbeat_max_age: float = 30.0  # /healthz fails when the last tick is older
