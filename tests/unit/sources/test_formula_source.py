"""The formula source: arithmetic over other KPIs' latest values, and nothing else."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from kpiwatch.config.rules import Kpi
from kpiwatch.errors import BadValueError, SourceError
from kpiwatch.model import Observation
from kpiwatch.sources.formula import FormulaSource

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
EARLIER = datetime(2024, 6, 1, 11, 0, tzinfo=UTC)


def _kpi(query: str) -> Kpi:
    return Kpi(
        id="conversion",
        name="Conversion",
        owner="ann",
        direction="higher_is_better",
        source="formula",
        query=query,
    )


class Store:
    """A stand-in for the runtime's store lookup that records what was asked."""

    def __init__(self, **values: float) -> None:
        self.values = values
        self.asked: list[str] = []

    def __call__(self, kpi_id: str) -> Observation | None:
        self.asked.append(kpi_id)
        value = self.values.get(kpi_id)
        return None if value is None else Observation(kpi_id, EARLIER, value)


def _value(query: str, **values: float) -> float:
    return FormulaSource(Store(**values)).fetch(_kpi(query), NOW).current.value


def test_result_is_observed_now_for_the_formula_kpi() -> None:
    result = FormulaSource(Store(signups=25, visits=100)).fetch(_kpi("signups / visits * 100"), NOW)

    assert result.observations == (Observation("conversion", NOW, 25.0),)
    assert result.duration >= 0


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("a + b - c", 7.0),
        ("a * b / c", 10.0),
        ("a // c", 2.0),
        ("a % c", 1.0),
        ("c ** 2", 4.0),
        ("-a + +b", -1.0),
        ("(a + b) * 2", 18.0),
        ("2.5 * 2", 5.0),
        ("min(a, b, c)", 2.0),
        ("max(a, b)", 5.0),
        ("abs(c - a)", 3.0),
        ("round(a / b, 2)", 1.25),
        ("round(b / c)", 2.0),
    ],
)
def test_arithmetic_and_functions(query: str, expected: float) -> None:
    assert _value(query, a=5, b=4, c=2) == expected


def test_function_names_are_not_inputs() -> None:
    store = Store(a=1, b=2)
    FormulaSource(store).fetch(_kpi("max(a, b) + abs(a)"), NOW)

    assert sorted(store.asked) == ["a", "b"]


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"a": 1}, "input 'b' has no value yet"),
        ({}, "inputs 'a', 'b' have no value yet"),
    ],
)
def test_inputs_without_a_value(values: dict[str, float], reason: str) -> None:
    with pytest.raises(BadValueError, match=reason) as caught:
        FormulaSource(Store(**values)).fetch(_kpi("a / b"), NOW)

    assert caught.value.kpi == "conversion"
    assert caught.value.source == "formula"


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("signups / new_customers", r"division by zero \(new_customers is 0\)$"),
        ("signups // new_customers", r"division by zero \(new_customers is 0\)$"),
        ("signups % (new_customers * 2)", r"division by zero \(new_customers is 0\)$"),
        ("signups / (signups - 4)", r"division by zero$"),
    ],
)
def test_division_by_zero_names_the_zero_input(query: str, reason: str) -> None:
    source = FormulaSource(Store(signups=4, new_customers=0))
    with pytest.raises(BadValueError, match=reason):
        source.fetch(_kpi(query), NOW)


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("().__class__", "is not allowed"),
        ("a.__class__", "attribute access"),
        ("a.real", "attribute access"),
        ("__import__('os')", "function '__import__' is not allowed"),
        ("open('/etc/passwd')", "function 'open' is not allowed"),
        ("a[0]", "indexing"),
        ("a if a else a", "if/else"),
        ("a < 2", "comparison"),
        ("a and a", "and/or"),
        ("'x' * 3", "constant 'x' is not allowed"),
        ("True + a", "constant True is not allowed"),
        ("lambda: 1", "lambda"),
        ("a & 1", "operator BitAnd is not allowed"),
        ("max(a, key=a)", "no keyword arguments"),
        ("max()", "at least one argument"),
        ("[a][0]", "is not allowed"),
        ("a +", "invalid formula"),
    ],
)
def test_anything_but_arithmetic_is_refused_before_evaluation(query: str, words: str) -> None:
    store = Store(a=1)
    with pytest.raises(SourceError, match=words) as caught:
        FormulaSource(store).fetch(_kpi(query), NOW)

    assert type(caught.value) is SourceError  # a formula problem, not a bad value
    assert store.asked == []  # refused before any input was read


@pytest.mark.parametrize(
    "query", ["10 ** 400", "9 ** 9 ** 9", "a ** 4000000", "(a * 1e308) * 10", "2 ** 10000000"]
)
def test_huge_results_are_bad_values_quickly(query: str) -> None:
    start = time.perf_counter()
    with pytest.raises(BadValueError, match=r"too large|not a finite number"):
        FormulaSource(Store(a=10)).fetch(_kpi(query), NOW)

    assert time.perf_counter() - start < 1


def test_negative_base_to_a_fraction_is_a_bad_value_not_a_complex() -> None:
    with pytest.raises(BadValueError, match="cannot compute"):
        FormulaSource(Store(a=-8)).fetch(_kpi("a ** 0.5"), NOW)


def test_non_finite_input_is_a_bad_value() -> None:
    with pytest.raises(BadValueError, match="input 'a' is inf"):
        FormulaSource(Store(a=float("inf"))).fetch(_kpi("a + 1"), NOW)


def test_a_failing_lookup_is_a_source_error() -> None:
    def broken(kpi_id: str) -> Observation | None:
        raise RuntimeError("store is down")

    with pytest.raises(SourceError, match="could not read input 'a': store is down"):
        FormulaSource(broken).fetch(_kpi("a + 1"), NOW)
