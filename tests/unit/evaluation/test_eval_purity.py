"""The evaluation core stays pure: no I/O libraries, no clock reads, deterministic output."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from _evalkit import NOW, make_kpi, series

import kpiwatch.evaluation
from kpiwatch.evaluation import evaluate
from kpiwatch.model import Status

PACKAGE = Path(kpiwatch.evaluation.__file__).parent
ALLOWED = {
    "__future__", "bisect", "collections", "dataclasses", "datetime", "enum", "functools", "math",
    "statistics", "typing", "zoneinfo", "kpiwatch",
}  # fmt: skip


def test_only_pure_imports_and_no_clock_reads() -> None:
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                if isinstance(node, ast.Attribute):
                    assert node.attr not in {"now", "utcnow", "today", "time_ns"}, path.name
                continue
            for name in names:
                assert name.split(".")[0] in ALLOWED, f"{path.name} imports {name}"
                if name.startswith("kpiwatch."):
                    assert name.split(".")[1] in {"model", "config", "evaluation"}, name


def test_same_input_same_output() -> None:
    kpi = make_kpi(
        thresholds={"yellow": 4.5, "red": 5.5},
        target={"value": 3.5, "by": "2027-06-30"},
        trend={"worsening_streak": 2, "change": {"max_pct": 5, "over": "7d"}, "off_track": "red"},
        for_=2,
    )
    history = series([4.0, 4.4, 4.9, 5.8])
    first = evaluate(kpi, history, None, NOW)
    again = evaluate(kpi, history, None, NOW)
    assert first == again
    assert len(first.findings) == 5
    second = evaluate(kpi, history, first.state, NOW)
    assert second == evaluate(kpi, history, first.state, NOW)


def test_evaluation_results_are_immutable() -> None:
    result = evaluate(make_kpi(), series([1.0]), None, NOW)
    with pytest.raises(AttributeError):
        result.state.status = Status.RED  # type: ignore[misc]
    with pytest.raises(AttributeError):
        result.findings[0].reason = "changed"  # type: ignore[misc]
