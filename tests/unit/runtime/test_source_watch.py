"""The runner's memory of its sources, as the batched path uses it: a batch's outcomes
recorded together step the source once, and a KPI's view of "the others" is right
after outcomes are replaced and KPIs removed by a reload."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kpiwatch.config.loader import load_rule_text
from kpiwatch.config.rules import RuleSet
from kpiwatch.evaluation.blindness import KPI, SOURCE
from kpiwatch.evaluation.incidents import KpiOutcome
from kpiwatch.runtime.source_watch import SourceWatch

NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
OK = KpiOutcome(NOW, False)


def _rules(count: int) -> RuleSet:
    kpis = "\n".join(
        f"  - {{id: k{n}, name: K{n}, owner: o@example.com, direction: lower_is_better,"
        f" source: wh, query: SELECT {n}}}"
        for n in range(count)
    )
    return load_rule_text(f'sources: {{wh: {{type: sql, url: "sqlite://"}}}}\nkpis:\n{kpis}\n').rules


def _failed(reason: str, *, stale: bool = False) -> KpiOutcome:
    return KpiOutcome(NOW, True, stale=stale, reason=reason)


def test_a_batch_where_every_kpi_fails_opens_one_incident() -> None:
    rules = _rules(3)
    watch = SourceWatch({}, timedelta(days=1))
    changes = watch.record_many(rules, [(k, _failed("no such table")) for k in rules.kpis])
    assert len(changes) == 1  # one step for the batch: one incident, its one event
    assert not changes[0].health.up
    assert [e.kind.value for e in changes[0].events] == ["data_incident"]
    assert changes[0].events[0].data["count"] == 3


def test_a_failing_query_is_the_kpis_own_once_another_kpi_works() -> None:
    rules = _rules(3)
    k0, k1, k2 = rules.kpis
    watch = SourceWatch({}, timedelta(days=1))
    # nothing known of the others yet: the source is not seen to work
    assert watch.context(rules, k0, False).error_scope == SOURCE
    watch.record_many(rules, [(k1, OK), (k2, _failed("bad column"))])
    assert watch.context(rules, k0, False).error_scope == KPI
    watch.record_many(rules, [(k1, _failed("bad column"))])  # replaced: now failing too
    assert watch.context(rules, k0, False).error_scope == SOURCE
    # its own outcome is not one of "the others"
    watch.record_many(rules, [(k0, OK)])
    assert watch.context(rules, k0, False).error_scope == SOURCE
    assert watch.context(rules, k1, False).error_scope == KPI


def test_a_stale_other_makes_staleness_the_sources_until_it_is_removed() -> None:
    rules = _rules(3)
    k0, k1, _ = rules.kpis
    watch = SourceWatch({}, timedelta(days=1))
    watch.record_many(rules, [(k0, OK), (k1, _failed("older than 1h", stale=True))])
    assert watch.context(rules, k0, False).stale_scope == SOURCE
    assert watch.context(rules, k1, False).stale_scope == KPI  # only itself is stale
    smaller = _rules(1)  # a reload removes k1 (and k2)
    watch.record_many(smaller, [(smaller.kpis[0], OK)])
    assert watch.context(smaller, smaller.kpis[0], False).stale_scope == KPI
