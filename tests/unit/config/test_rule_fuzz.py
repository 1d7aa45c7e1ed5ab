"""Whatever a rule file holds, loading it succeeds or raises RuleLoadError: nothing else."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kpiwatch.config.lint import lint
from kpiwatch.config.loader import load_rule_text
from kpiwatch.config.rules import (
    Escalation,
    HttpSource,
    Kpi,
    Mute,
    RuleFile,
    SqlSource,
    Target,
    Team,
    Thresholds,
    Trend,
)
from kpiwatch.errors import RuleLoadError

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Keys and values close to real ones reach deeper into validation than random text.
MODELS = (RuleFile, Kpi, Team, SqlSource, HttpSource, Thresholds, Target, Trend, Mute, Escalation)
REAL_KEYS = {info.alias or name for model in MODELS for name, info in model.model_fields.items()}
KEYS = st.sampled_from(sorted(REAL_KEYS | {"${X}", "kind"})) | st.text(max_size=8)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text(max_size=12)
    | st.sampled_from(
        [
            "sql",
            "http",
            "csv",
            "push",
            "formula",
            "lower_is_better",
            "5m",
            "a+b",
            "${X:-1}",
            "$${Y}",
            "${",
            "2026-01-01",
            "a@example.com",
            "lagging",
            "a",
            "0 8 * * *",
        ]
    )
)
DOCUMENTS: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=5),
    max_leaves=25,
)


def _load(text: str) -> None:
    try:
        loaded = load_rule_text(text, "fuzz.yaml", env={"X": "7"})
    except RuleLoadError as exc:
        problems = exc.problems
    else:
        problems = tuple(lint(loaded))
    for problem in problems:  # every problem points into the document
        assert problem.line >= 1, problem
        assert problem.column >= 1, problem


@FUZZ
@given(st.text(max_size=200))
def test_arbitrary_text(text: str) -> None:
    _load(text)


@FUZZ
@given(DOCUMENTS)
def test_arbitrary_documents(document: Any) -> None:
    _load(yaml.safe_dump(document, allow_unicode=True))


@FUZZ
@given(st.lists(st.dictionaries(KEYS, DOCUMENTS, max_size=8), max_size=3))
def test_arbitrary_kpi_lists(kpis: list[dict[str, Any]]) -> None:
    _load(yaml.safe_dump({"kpis": kpis}, allow_unicode=True))
