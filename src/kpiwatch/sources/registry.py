"""Build one Source per declared source, plus the builtins formula and push."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import structlog

from kpiwatch.config.rules import BUILTIN_SOURCES, Kpi, RuleSet, SqlSource
from kpiwatch.errors import ConfigError, SourceError
from kpiwatch.sources.base import FetchResult, Latest, Source
from kpiwatch.sources.formula import FormulaSource
from kpiwatch.sources.push import PushSource
from kpiwatch.sources.sql import SqlQuerySource

log = structlog.get_logger(__name__)


class UnsupportedSource:
    """A declared source of a type kpiwatch cannot query yet.

    Its KPIs show as unknown with a clear reason instead of the daemon
    refusing to start.
    """

    def __init__(self, name: str, source_type: str) -> None:
        self.name = name
        self.source_type = source_type

    def fetch(self, kpi: Kpi, now: datetime) -> FetchResult:
        """Always fails: there is no adapter for this type."""
        raise SourceError(
            f"source type {self.source_type!r} is not supported yet", source=self.name, kpi=kpi.id
        )

    def close(self) -> None:
        """Nothing to release."""


def build_sources(rules: RuleSet, latest: Latest) -> dict[str, Source]:
    """One adapter per source in the rules, plus "formula" and "push".

    ``latest`` looks up the latest stored observation of a KPI id. Engines
    and connections open lazily, on the first fetch.
    """
    sources: dict[str, Source] = {}
    for name, config in rules.sources.items():
        if name in BUILTIN_SOURCES:
            raise ConfigError(f"source name {name!r} is reserved for the builtin source")
        if isinstance(config, SqlSource):
            sources[name] = SqlQuerySource(name, config)
        else:
            sources[name] = UnsupportedSource(name, config.type)
    sources["formula"] = FormulaSource(latest)
    sources["push"] = PushSource(latest)
    return sources


def close_all(sources: Mapping[str, Source]) -> None:
    """Close every source; one failing to close does not keep the others open."""
    for name, source in sources.items():
        try:
            source.close()
        except Exception as exc:  # shutting down: report and carry on
            log.warning("source_close_failed", source=name, error=str(exc))
