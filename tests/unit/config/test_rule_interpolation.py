"""``${VAR}`` substitution: in strings, and in rule documents with located errors."""

from __future__ import annotations

import textwrap
from datetime import timedelta

import pytest

from kpiwatch.config.interpolate import interpolate
from kpiwatch.config.loader import LoadedRules, load_rule_text
from kpiwatch.config.rules import SqlSource
from kpiwatch.errors import RuleLoadError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${A}", "alpha"),
        ("x-${A}-${A}", "x-alpha-alpha"),
        ("${B:-fallback}", "fallback"),
        ("${EMPTY:-fallback}", "fallback"),  # empty counts as unset, as in a shell
        ("${EMPTY}", ""),
        ("${A:-unused}", "alpha"),
        ("${B:-}", ""),
        ("${B:-a b: c}", "a b: c"),
        ("$${A}", "${A}"),
        ("$${B:-x} ${A}", "${B:-x} alpha"),
        ("$$ and $A and {A}", "$$ and $A and {A}"),
        ("${B:-pa$word}", "pa$word"),
    ],
)
def test_interpolate(text: str, expected: str) -> None:
    assert interpolate(text, {"A": "alpha", "EMPTY": ""}) == (expected, [])


@pytest.mark.parametrize("text", ["${B}", "${B", "${1X}", "${A:-${B}}", "${}"])
def test_interpolate_reports_what_it_cannot_resolve(text: str) -> None:
    value, unresolved = interpolate(text, {})
    assert value == text  # left as written
    assert unresolved


def test_values_of_variables_are_not_interpolated_again() -> None:
    assert interpolate("${A}", {"A": "${B}"}) == ("${B}", [])


def load(text: str, env: dict[str, str]) -> LoadedRules:
    return load_rule_text(textwrap.dedent(text), "r.yaml", env=env)


SOURCE = """\
sources:
  w:
    type: sql
    url: ${URL}
    timeout: ${T:-30s}
"""


def test_set_variable_and_default() -> None:
    source = load(SOURCE, {"URL": "sqlite://"}).rules.sources["w"]
    assert isinstance(source, SqlSource)
    assert (source.url, source.timeout) == ("sqlite://", timedelta(seconds=30))
    source = load(SOURCE, {"URL": "sqlite://", "T": "5m"}).rules.sources["w"]
    assert source.timeout == timedelta(minutes=5)


def test_missing_variable_is_located() -> None:
    with pytest.raises(RuleLoadError) as caught:
        load(SOURCE, {})
    assert [str(p) for p in caught.value.problems] == [
        "r.yaml:4:10: sources.w.url: environment variable URL is not set "
        "(give a default with ${URL:-value})"
    ]


def test_every_missing_variable_is_reported_with_its_column() -> None:
    text = 'teams:\n  cs: {slack: "#${A}-${B}", email: ["${C}"]}\n'
    with pytest.raises(RuleLoadError) as caught:
        load(text, {"B": "b"})
    assert [str(p) for p in caught.value.problems] == [
        "r.yaml:2:17: teams.cs.slack: environment variable A is not set "
        "(give a default with ${A:-value})",
        "r.yaml:2:38: teams.cs.email[0]: environment variable C is not set "
        "(give a default with ${C:-value})",
    ]


def test_missing_variable_in_a_block_scalar() -> None:
    text = "sources:\n  w:\n    type: sql\n    url: |\n      first\n      x ${URL}\n"
    with pytest.raises(RuleLoadError) as caught:
        load(text, {})
    assert [p.line for p in caught.value.problems] == [6]
    assert [p.column for p in caught.value.problems] == [9]


def test_malformed_reference_is_an_error() -> None:
    with pytest.raises(RuleLoadError, match=r"r.yaml:3:12: teams.cs.slack: malformed variable"):
        load("teams:\n  cs:\n    slack: ${oops\n", {})


def test_escaped_reference_is_literal() -> None:
    team = load('teams:\n  cs: {slack: "$${CHANNEL}"}\n', {"CHANNEL": "no"}).rules.teams["cs"]
    assert team.slack == "${CHANNEL}"


KPI = """\
kpis:
  - id: a
    name: "${NAME:-A}"
    owner: sam@example.com
    direction: higher_is_better
    source: push
"""


def test_plain_scalar_is_typed_after_substitution() -> None:
    kpi = load(KPI + "    for: ${N:-3}\n", {}).rules.kpis[0]
    assert kpi.for_ == 3
    # labels are text: a plain number is rejected, a quoted one is text (inside {...}
    # YAML itself wants ${...} quoted: braces are flow indicators there)
    with pytest.raises(RuleLoadError, match=r"r.yaml:8:14: kpis\[0\].labels.level: expected text"):
        load(KPI + "    labels:\n      level: ${L:-3}\n", {})
    kpi = load(KPI + '    labels: {level: "${L:-3}"}\n', {}).rules.kpis[0]
    assert kpi.labels == {"level": "3"}


def test_substituted_values_never_change_the_structure() -> None:
    kpi = load(KPI, {"NAME": "a: b\n- c"}).rules.kpis[0]
    assert kpi.name == "a: b\n- c"


def test_keys_are_not_interpolated() -> None:
    with pytest.raises(RuleLoadError, match=r"unknown key '\$\{K\}'"):
        load(KPI + "    ${K}: 1\n", {"K": "unit"})


def test_validation_errors_at_an_unresolved_value_are_not_repeated() -> None:
    with pytest.raises(RuleLoadError) as caught:
        load(KPI + "    max_age: ${AGE}\n", {})
    assert [p.path for p in caught.value.problems] == ["kpis[0].max_age"]
    assert "AGE is not set" in caught.value.problems[0].message
