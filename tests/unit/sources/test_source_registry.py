"""build_sources gives one adapter per source; close_all closes them all."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kpiwatch.config import rules
from kpiwatch.errors import ConfigError, SourceError
from kpiwatch.model import Observation
from kpiwatch.sources.base import FetchResult, Source
from kpiwatch.sources.csv_file import CsvTableSource
from kpiwatch.sources.formula import FormulaSource
from kpiwatch.sources.http import HttpJsonSource
from kpiwatch.sources.prometheus import PrometheusQuerySource
from kpiwatch.sources.push import PushSource
from kpiwatch.sources.registry import build_sources, close_all
from kpiwatch.sources.sql import SqlQuerySource

NOW = datetime(2024, 6, 1, tzinfo=UTC)


def _nothing(kpi_id: str) -> Observation | None:
    return None


def _kpi(source: str) -> rules.Kpi:
    return rules.Kpi(
        id="k", name="K", owner="ann", direction="higher_is_better", source=source, query="x"
    )


def test_one_adapter_per_source_plus_the_builtins() -> None:
    ruleset = rules.RuleSet(
        sources={
            "warehouse": rules.SqlSource(type="sql", url="sqlite://"),
            "api": rules.HttpSource(type="http", url="https://example.com/kpis"),
            "prom": rules.PrometheusSource(type="prometheus", url="http://prom:9090"),
            "sheet": rules.CsvSource(type="csv", path="kpis.csv"),
        }
    )

    sources = build_sources(ruleset, _nothing)

    assert {name: type(s) for name, s in sources.items()} == {
        "warehouse": SqlQuerySource,
        "api": HttpJsonSource,
        "prom": PrometheusQuerySource,
        "sheet": CsvTableSource,
        "formula": FormulaSource,
        "push": PushSource,
    }
    assert all(name == source.name for name, source in sources.items())
    close_all(sources)


def test_a_declared_source_cannot_take_a_builtin_name() -> None:
    ruleset = rules.RuleSet(sources={"push": rules.SqlSource(type="sql", url="sqlite://")})

    with pytest.raises(ConfigError, match="'push' is reserved"):
        build_sources(ruleset, _nothing)


class _Closable:
    def __init__(self, name: str, fail: bool = False) -> None:
        self.name = name
        self.fail = fail
        self.closed = False

    def fetch(self, kpi: rules.Kpi, now: datetime) -> FetchResult:
        raise SourceError("unused")

    def close(self) -> None:
        self.closed = True
        if self.fail:
            raise RuntimeError("pool already gone")


def test_close_all_closes_every_source_even_when_one_fails() -> None:
    first, broken, last = _Closable("a"), _Closable("b", fail=True), _Closable("c")
    sources: dict[str, Source] = {"a": first, "b": broken, "c": last}

    close_all(sources)

    assert [first.closed, broken.closed, last.closed] == [True, True, True]
