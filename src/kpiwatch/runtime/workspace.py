"""A Workspace: one loaded rule set with the sources and router built for it.

Reload builds a new Workspace and swaps it in whole, so a running evaluation
never sees half old, half new rules.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from kpiwatch.config.file_roots import FileRoots
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
    # one bounded pool per declared source: a slow or hung source only ties up its own threads
    fetch_pools: Mapping[str, ThreadPoolExecutor] = field(default_factory=dict)
    # the newest stored observation of many KPIs in one read: a batch of push and
    # formula KPIs reads the store once (None: each reads its own)
    latest_of: Callable[[Collection[str]], Mapping[str, Observation]] | None = None

    @property
    def rules(self) -> RuleSet:
        return self.loaded.rules

    def close(self) -> None:
        for pool in self.fetch_pools.values():
            pool.shutdown(wait=False, cancel_futures=True)  # a hung fetch must not block reload
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
    latest_of: Callable[[Collection[str]], Mapping[str, Observation]] | None = None,
) -> Workspace:
    """Sources and routing for a freshly loaded rule set."""
    # the roots the paths were checked against at load, so fetches refuse what load would
    roots = loaded.file_roots or FileRoots.of(settings.rules_dir, settings.file_roots)
    return Workspace(
        loaded=loaded,
        sources=build_sources(loaded.rules, latest, _rule_file_dirs(loaded), roots=roots),
        router=Router(loaded.rules, channels=channels, oncall_emails=settings.oncall_emails),
        fetch_pools=fetch_pools(loaded.rules),
        latest_of=latest_of,
    )


def fetch_pools(rules: RuleSet) -> dict[str, ThreadPoolExecutor]:
    """A pool of ``max_concurrency`` threads for each declared source."""
    return {
        name: ThreadPoolExecutor(config.max_concurrency, thread_name_prefix=f"fetch-{name}")
        for name, config in rules.sources.items()
    }


def _rule_file_dirs(loaded: LoadedRules) -> dict[str, Path]:
    """For each source, the directory of the rule file that declares it."""
    return {name: Path(file).parent for name, (file, _, _) in loaded.source_locations.items()}
