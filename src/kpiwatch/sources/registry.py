"""Build one Source per declared source, plus the builtins formula and push."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import structlog

from kpiwatch.config.file_roots import FileRoots
from kpiwatch.config.rules import (
    BUILTIN_SOURCES,
    CsvSource,
    HttpSource,
    PrometheusSource,
    RuleSet,
    SqlSource,
)
from kpiwatch.errors import ConfigError
from kpiwatch.sources.base import Latest, Source
from kpiwatch.sources.formula import FormulaSource
from kpiwatch.sources.push import PushSource

log = structlog.get_logger(__name__)


def build_sources(
    rules: RuleSet,
    latest: Latest,
    base_dirs: Mapping[str, Path] | None = None,
    *,
    roots: FileRoots | None = None,
) -> dict[str, Source]:
    """One adapter per source in the rules, plus "formula" and "push".

    ``latest`` looks up the latest stored observation of a KPI id. Engines
    and connections open lazily, on the first fetch. ``base_dirs`` gives, per
    source, the directory its relative file paths are read from (the rule
    file's own directory); ``roots`` the directories CSV sources may read
    (default: each source's own base directory, see CsvTableSource).
    """
    # Each adapter is imported only when a source of its type is declared: the HTTP
    # clients (requests, urllib3) cost a daemon that only takes pushes several MiB.
    sources: dict[str, Source] = {}
    for name, config in rules.sources.items():
        if name in BUILTIN_SOURCES:
            raise ConfigError(f"source name {name!r} is reserved for the builtin source")
        if isinstance(config, SqlSource):
            from kpiwatch.sources.sql import SqlQuerySource

            sources[name] = SqlQuerySource(name, config)
        elif isinstance(config, HttpSource):
            from kpiwatch.sources.http import HttpJsonSource

            sources[name] = HttpJsonSource(name, config)
        elif isinstance(config, CsvSource):
            from kpiwatch.sources.csv_file import CsvTableSource

            base_dir = (base_dirs or {}).get(name)
            sources[name] = CsvTableSource(name, config, base_dir=base_dir, roots=roots)
        elif isinstance(config, PrometheusSource):
            from kpiwatch.sources.prometheus import PrometheusQuerySource

            sources[name] = PrometheusQuerySource(name, config)
        else:  # the Source union is exhaustive; a new type must be wired here
            raise ConfigError(f"source {name!r}: no adapter for type {config.type!r}")
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
