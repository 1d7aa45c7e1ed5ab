"""Equal parts of loaded KPIs are one object; different or mutable parts are not."""

from __future__ import annotations

from kpiwatch.config.loader import load_rule_text
from kpiwatch.config.rules import Kpi
from kpiwatch.config.sharing import Sharing

ITEM = (
    "  - {{id: k{i}, name: K, owner: o@example.com, direction: lower_is_better, source: push,"
    " every: 5m, thresholds: {{yellow: {yellow}, red: 9}}, trend: {{worsening_streak: 3}}}}\n"
)


def _kpis(*yellows: str) -> tuple[Kpi, ...]:
    text = "kpis:\n" + "".join(ITEM.format(i=i, yellow=y) for i, y in enumerate(yellows))
    return load_rule_text(text, "r.yaml", env={}).rules.kpis


def test_equal_parts_are_shared() -> None:
    a, b = _kpis("1", "1")

    assert a.trend is b.trend
    assert a.thresholds is b.thresholds
    assert a.escalation is b.escalation
    assert a.every is b.every
    assert a.model_fields_set is b.model_fields_set
    assert a.labels is not b.labels  # mutable: each KPI its own


def test_different_values_are_not_shared() -> None:
    a, b, c = _kpis("1", "-0.0", "0.0")

    assert a.thresholds is not b.thresholds
    assert b.thresholds is not c.thresholds  # equal, but -0.0 is not 0.0
    assert b.thresholds is not None
    assert str(b.thresholds.yellow) == "-0.0"
    assert a.trend is b.trend is c.trend


def test_shared_kpis_equal_their_unshared_selves() -> None:
    kpis = _kpis("1", "2", "1")
    sharing = Sharing()
    for kpi in kpis:
        copy = Kpi.model_validate(kpi.model_dump(by_alias=True, exclude_unset=True))
        shared = sharing.share(copy)
        assert shared == kpi
        assert shared.model_dump() == kpi.model_dump()
        assert shared.model_fields_set == kpi.model_fields_set
