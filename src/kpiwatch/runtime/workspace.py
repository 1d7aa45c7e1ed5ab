"""A Workspace: one loaded rule set with the sources and router built for it.

Reload builds a new Workspace and swaps it in whole, so a running evaluation
never sees half old, half new rules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog

from kpiwatch.config.loader import LoadedRules
from kpiwatch.config.rules import RuleSet
from kpiwatch.config.settings import Settings
from kpiwatch.model import Observation
from kpiwatch.notify.routing import Router
from kpiwatch.sources.base import Source
from kpiwatch.sources.registry import build_sources

log = structlog.get_logger("kpiwatch.workspace")


@dataclass(frozen=True)
class Workspace:
    loaded: LoadedRules
    sources: Mapping[str, Source]
    router: Router

    @property
    def rules(self) -> RuleSet:
        return self.loaded.rules

    def close(self) -> None:
        for source in self.sources.values():
            try:
                source.close()
            except Exception as exc:  # closing must not stop the others closing
                log.warning("closing a source failed", source=source.name, error=str(exc))


def build_workspace(
    loaded: LoadedRules,
    settings: Settings,
    latest: Callable[[str], Observation | None],
    channels: frozenset[str],
) -> Workspace:
    """Sources and routing for a freshly loaded rule set."""
    return Workspace(
        loaded=loaded,
        sources=build_sources(loaded.rules, latest),
        router=Router(loaded.rules, channels=channels, oncall_emails=settings.oncall_emails),
    )
