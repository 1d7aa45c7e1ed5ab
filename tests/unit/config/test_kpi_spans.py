"""A changed rule file is parsed without the KPI items the rules cache holds by their
text (config/kpi_spans.py), and loads exactly as a whole parse does."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kpiwatch.config import kpi_spans
from kpiwatch.config.kpi_spans import kpi_spans as spans_of
from kpiwatch.config.loader import LoadedRules, load_rules

HEAD = """\
sources:
  wh: {type: sql, url: "sqlite:///w.db"}
teams:
  growth: {slack: "#growth"}
kpis:
  # the KPIs of the growth team
"""


def _kpi(i: int, name: str | None = None) -> str:
    return f"""\
  - id: kpi_{i}
    name: {name or f"KPI {i}"}
    owner: sam@example.com
    team: growth
    direction: higher_is_better
    source: wh
    query: |
      SELECT day, n FROM t{i}
      - not an item: a line of the query
    thresholds: {{yellow: 1000, red: {i}}}

"""


def _file(n: int, **names: str) -> str:
    return HEAD + "".join(_kpi(i, names.get(f"kpi_{i}")) for i in range(n))


def _same(a: LoadedRules, b: LoadedRules) -> None:
    assert a.rules == b.rules
    assert a.locations == b.locations
    assert (a.team_locations, a.source_locations) == (b.team_locations, b.source_locations)


def _parsed(rules: Path, cache: Path) -> tuple[LoadedRules, list[str]]:
    """A load with the cache, and the texts kpi_spans gave libyaml to parse."""
    texts: list[str] = []
    real = kpi_spans.plain

    def plain(text: str, env: Any) -> Any:
        texts.append(text)
        return real(text, env)

    with mock.patch.object(kpi_spans, "plain", side_effect=plain):
        loaded = load_rules(rules, cache_dir=cache)
    return loaded, texts


def test_spans_are_the_items_lines_and_anything_unusual_has_none() -> None:
    text = _file(3) + "# the end\n"
    spans = spans_of(text)
    assert spans is not None
    assert spans.lines == (7, 18, 29)
    assert spans.item(1) == _kpi(1)
    assert spans.item(2) == _kpi(2) + "# the end\n"  # comments belong to the item before
    assert spans.skeleton({0, 2}).count("\n") == text.count("\n")
    unindented = "kpis:\n- id: a\n  name: A\n- {id: b}\nsources: {}\n"
    found = spans_of(unindented)
    assert found is not None
    assert [found.item(i) for i in range(2)] == ["- id: a\n  name: A\n", "- {id: b}\n"]
    for odd in (
        "kpis: []\n",  # a flow list
        "kpis:\n  - id: a\nkpis:\n  - id: b\n",  # two keys: the composer refuses it
        "kpis:\r\n  - id: a\r\n",  # other line breaks
        "kpis:\n  -\n    id: a\n",  # an item starting on the next line
        "kpis:\n    - id: a\n  - id: b\n",  # less indented than the first item
        "kpis:\n  - id: a\n  name: A\n",  # level with the items, no item
        '"kpis":\n  - id: a\n',  # a quoted key
    ):
        assert spans_of(odd) is None, odd


def test_an_edit_parses_only_the_changed_item_and_loads_as_a_whole_parse(
    tmp_path: Path,
) -> None:
    rules, cache = tmp_path / "rules", tmp_path / "cache"
    rules.mkdir()
    path = rules / "kpis.yaml"
    path.write_text(_file(40))
    load_rules(rules, cache_dir=cache)
    path.write_text(_file(40, kpi_17="Edited KPI"))
    loaded, parsed = _parsed(rules, cache)
    _same(loaded, load_rules(rules))
    assert loaded.rules.by_id["kpi_17"].name == "Edited KPI"
    skeleton, alone = parsed  # the file without the 39 known items, and the edit alone
    assert "id: kpi_17" in skeleton
    assert "id: kpi_16" not in skeleton
    assert "teams:" in skeleton
    assert alone == "kpis:\n" + _kpi(17, "Edited KPI")

    # an item put in front: every other one moves down, their positions with them;
    # one taken out, two swapped
    edits = [
        HEAD + _kpi(99) + _file(40)[len(HEAD) :],
        _file(40).replace(_kpi(5), ""),
        _file(40).replace(_kpi(3) + _kpi(4), _kpi(4) + _kpi(3)),
    ]
    for text in edits:
        path.write_text(_file(40))
        load_rules(rules, cache_dir=cache)
        path.write_text(text)
        loaded, parsed = _parsed(rules, cache)
        _same(loaded, load_rules(rules))
        assert len(parsed) <= 2, text[:40]  # the skeleton, and the new item if any


def test_items_whose_text_runs_past_their_span_are_parsed_whole(tmp_path: Path) -> None:
    rules, cache = tmp_path / "rules", tmp_path / "cache"
    rules.mkdir()
    path = rules / "kpis.yaml"
    # quoted text going on in column 0, and over a line that looks like an item
    runs_on = _file(4).replace("name: KPI 1\n", 'name: "KPI\none"\n')
    looks_like_items = _file(4).replace("name: KPI 2\n", 'name: "KPI\n  - two"\n')
    for text in (runs_on, looks_like_items):
        path.write_text(text)
        first, parsed = _parsed(rules, cache)
        assert parsed == []  # nothing known: parsed whole, its spans not kept
        _same(first, load_rules(rules))
        path.write_text(text.replace("red: 3}", "red: 33}"))
        again, parsed = _parsed(rules, cache)
        _same(again, load_rules(rules))
    # an edit that opens a quote running over the known items after it
    path.write_text(_file(6))
    load_rules(rules, cache_dir=cache)
    opened = (
        _file(6)
        .replace("name: KPI 1\n", 'name: "KPI 1\n')
        .replace("name: KPI 4\n", 'name: KPI 4"\n')
    )
    path.write_text(opened)
    whole = yaml.safe_load(opened)
    assert len(whole["kpis"]) == 3  # the quote took kpi_2 to kpi_4 in
    loaded, parsed = _parsed(rules, cache)
    _same(loaded, load_rules(rules))
    assert sorted(loaded.rules.by_id) == ["kpi_0", "kpi_1", "kpi_5"]
    assert loaded.rules.by_id["kpi_1"].name.endswith("- id: kpi_4 name: KPI 4")
    assert len(parsed) == 1  # the skeleton: one item where two were new, so parsed whole


class _Indented(yaml.SafeDumper):
    def increase_indent(self, flow: bool = False, indentless: bool = False) -> Any:
        return super().increase_indent(flow, False)


_NAMES = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")) | st.sampled_from("\n-#:\"' "),
    min_size=1,
    max_size=30,
).filter(lambda s: s.strip() != "")


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    names=st.lists(_NAMES, min_size=2, max_size=6),
    edited=st.integers(0, 5),
    new_name=_NAMES,
    indented=st.booleans(),
    width=st.sampled_from([20, 80, 1000]),
)
def test_any_names_load_after_an_edit_as_a_whole_parse(
    tmp_path_factory: pytest.TempPathFactory,
    names: list[str],
    edited: int,
    new_name: str,
    indented: bool,
    width: int,
) -> None:
    """Names PyYAML writes in every style (plain, quoted, folded over lines, with ``- ``
    and ``#`` in them), the list indented or not: an edited file loads from the cache's
    items exactly as it loads parsed whole."""
    root = tmp_path_factory.mktemp("edit")
    rules, cache = root / "rules", root / "cache"
    rules.mkdir()

    def text(kpi_names: list[str]) -> str:
        kpis = [
            {"id": f"k{i}", "name": name, "owner": "o@example.com",
             "direction": "higher_is_better", "source": "push", "thresholds": {"red": i}}
            for i, name in enumerate(kpi_names)
        ]  # fmt: skip
        dumper = _Indented if indented else yaml.SafeDumper
        return yaml.dump({"kpis": kpis}, Dumper=dumper, width=width, allow_unicode=True)

    (rules / "kpis.yaml").write_text(text(names))
    load_rules(rules, cache_dir=cache)
    changed = list(names)
    changed[edited % len(names)] = new_name
    (rules / "kpis.yaml").write_text(text(changed))
    loaded, parsed = _parsed(rules, cache)
    _same(loaded, load_rules(rules))
    one_line = not any("\n" in name for name in [*names, new_name])
    if changed != names and width == 1000 and one_line:
        assert parsed, "one line a name: the other items come from the cache"
