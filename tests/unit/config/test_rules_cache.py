"""The rules cache makes a load faster and nothing else: the same rules, the same
problems, whatever state the cache is in."""

from __future__ import annotations

import json
import math
import os
import shutil
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from kpiwatch.config import rules_cache
from kpiwatch.config.loader import LoadedRules, load_rules
from kpiwatch.config.settings import Settings
from kpiwatch.errors import RuleLoadError

FORMAT = rules_cache.FORMAT
FULL = Path(__file__).parents[2] / "testdata" / "rules" / "full"
ENV = {"BILLING_TOKEN": "s3cret"}

KPIS = """\
sources:
  wh: {type: sql, url: "sqlite:///w.db"}
teams:
  growth: {slack: "#growth"}
kpis:
  - id: signups
    name: Sign-ups
    owner: sam@example.com
    team: growth
    direction: higher_is_better
    source: wh
    query: SELECT day, n FROM signups ORDER BY day
    thresholds: {yellow: 90, red: 70}
    target: {value: 120, by: 2027-06-30}
  - id: churn
    name: Churn
    owner: sam@example.com
    direction: lower_is_better
    unit: "%"
    source: wh
    query: SELECT day, churn FROM churn WHERE plan != 'internal'
    every: 5m
    labels: {tier: one}
"""


def _same(a: LoadedRules, b: LoadedRules) -> None:
    assert a.rules == b.rules
    assert a.locations == b.locations
    assert (a.team_locations, a.source_locations) == (b.team_locations, b.source_locations)
    assert a.fingerprint == b.fingerprint


def _problems(rules: Path, cache: Path | None) -> list[str]:
    with pytest.raises(RuleLoadError) as caught:
        load_rules(rules, env=ENV, cache_dir=cache)
    return [str(p) for p in caught.value.problems]


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "kpis.yaml").write_text(KPIS)
    shutil.copytree(FULL, tmp_path / "rules" / "full")
    return tmp_path / "rules"


def _cache_file(cache: Path) -> Path:
    (found,) = cache.glob("rules-*.json")
    return found


def test_a_cached_load_gives_the_same_rules_and_skips_the_work(rules: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    without = load_rules(rules, env=ENV)
    first = load_rules(rules, env=ENV, cache_dir=cache)
    assert oct(_cache_file(cache).stat().st_mode & 0o777) == "0o600"
    assert oct(cache.stat().st_mode & 0o777) == "0o700"
    from kpiwatch.config.loader import compose as real_compose

    composed: list[str] = []

    def compose(doc: Any, *args: Any, **kwargs: Any) -> bool:
        composed.append(Path(doc.file).relative_to(rules).as_posix())
        return real_compose(doc, *args, **kwargs)

    with (
        mock.patch("kpiwatch.config.loader.compose", side_effect=compose),
        mock.patch("kpiwatch.sources.sql_guard.statement_problem") as check,
    ):
        again = load_rules(rules, env=ENV, cache_dir=cache)
    assert composed == ["full/churn.yaml"]  # its ${...} are never cached
    assert check.call_count == 0  # every query was accepted before, churn.yaml's too
    _same(without, first)
    _same(without, again)


def test_a_cached_load_vouches_for_its_queries_to_the_fetch_check(
    rules: Path, tmp_path: Path
) -> None:
    from kpiwatch.sources import sql_guard, sql_statements

    cache = tmp_path / "cache"
    load_rules(rules, env=ENV, cache_dir=cache)
    sql_guard._VOUCHED.clear()
    sql_statements.statement_problem.cache_clear()  # as in a new process
    loaded = load_rules(rules, env=ENV, cache_dir=cache).rules
    urls = {name: getattr(source, "url", None) for name, source in loaded.sources.items()}
    queries = [
        (k.query, sql_guard.dialect_of(urls[k.source]))
        for k in loaded.kpis
        if k.query and urls.get(k.source)
    ]
    assert ("SELECT day, n FROM signups ORDER BY day", "sqlite") in queries
    with mock.patch("sqlglot.parse", side_effect=AssertionError("parsed")):
        assert [sql_guard.fetch_problem(q, d) for q, d in queries] == [None] * len(queries)
    # vouched for in its dialect only; a query the load never saw is still parsed and judged
    assert sql_guard.fetch_problem("SELECT 1; DELETE FROM signups", "sqlite") is not None
    with (
        mock.patch("sqlglot.parse", side_effect=AssertionError("parsed")),
        pytest.raises(AssertionError, match="parsed"),
    ):
        sql_guard.fetch_problem("SELECT day, n FROM signups ORDER BY day", "tsql")
    # a load without the cache vouches for nothing: the fetch check parses (and caches)
    sql_guard._VOUCHED.clear()
    load_rules(rules, env=ENV)
    assert not sql_guard._VOUCHED


def test_a_file_with_references_is_never_cached(rules: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    load_rules(rules, env=ENV, cache_dir=cache)
    text = _cache_file(cache).read_text()
    assert "s3cret" not in text  # the environment's values are not written down
    assert "signups" in text


def test_a_file_whose_data_json_cannot_hold_is_read_each_time(rules: Path, tmp_path: Path) -> None:
    (rules / "set.yaml").write_text(
        "kpis:\n  - {id: s, name: S, owner: o, direction: lower_is_better, source: push,\n"
        "     leading: !!set {signups: null}}\n"
    )
    cache = tmp_path / "cache"
    first = load_rules(rules, env=ENV, cache_dir=cache)
    assert first.rules.by_id["s"].leading == ["signups"]
    _same(load_rules(rules, env=ENV, cache_dir=cache), first)
    _same(load_rules(rules, env=ENV), first)


def test_a_changed_file_is_read_again(rules: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    load_rules(rules, env=ENV, cache_dir=cache)
    (rules / "kpis.yaml").write_text(KPIS.replace("Sign-ups", "New sign-ups"))
    loaded = load_rules(rules, env=ENV, cache_dir=cache)
    assert loaded.rules.by_id["signups"].name == "New sign-ups"
    _same(loaded, load_rules(rules, env=ENV))


def test_a_changed_query_is_checked_again(rules: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    load_rules(rules, env=ENV, cache_dir=cache)
    broken = KPIS.replace("SELECT day, n FROM signups", "DELETE FROM signups; SELECT 1")
    (rules / "kpis.yaml").write_text(broken)
    assert _problems(rules, cache) == _problems(rules, None)
    assert "statements" in _problems(rules, cache)[0]


def test_problems_are_reported_exactly_as_without_a_cache(rules: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    load_rules(rules, env=ENV, cache_dir=cache)
    # a problem only the cross-file checks see: the cached file itself is unchanged
    other = "kpis:\n  - {id: signups, name: S, owner: o, direction: up, source: nowhere}\n"
    (rules / "other.yaml").write_text(other)
    assert _problems(rules, cache) == _problems(rules, None)
    (rules / "other.yaml").unlink()
    (rules / "kpis.yaml").write_text(KPIS.replace("red: 70", "red: seventy"))
    assert _problems(rules, cache) == _problems(rules, None)


def test_a_damaged_kpi_item_found_while_loading_sends_every_file_to_be_read_again(
    rules: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    expected = load_rules(rules, env=ENV)
    load_rules(rules, env=ENV, cache_dir=cache)
    path = _cache_file(cache)
    text = path.read_text()
    # each KPI item is its own JSON text, decoded only when its turn to be validated comes
    damaged = text.replace('\\"kpis\\":[\\"{', '\\"kpis\\":[\\"]{')
    assert damaged != text
    path.write_text(damaged)
    _same(load_rules(rules, env=ENV, cache_dir=cache), expected)
    assert path.read_text() == text  # written anew from the files


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda t: t[: len(t) // 2], id="cut-short"),
        pytest.param(lambda t: "", id="empty"),
        pytest.param(lambda t: "[1, 2]", id="not-an-object"),
        pytest.param(lambda t: t.replace(f'"format": {FORMAT}', '"format": 99'), id="other-format"),
        pytest.param(lambda t: t.replace('\\"pins\\":[', '\\"pins\\":[[1],'), id="bad-pins"),
        pytest.param(
            lambda t: t.replace('\\"data\\":{', '\\"data\\":{\\"\\\\u0000x\\":1,'), id="bad-data"
        ),
        pytest.param(lambda t: t.replace('"statements": [', '"statements": [1, '), id="bad-keys"),
    ],
)
def test_a_damaged_cache_is_ignored(rules: Path, tmp_path: Path, damage: Any) -> None:
    cache = tmp_path / "cache"
    expected = load_rules(rules, env=ENV)
    load_rules(rules, env=ENV, cache_dir=cache)
    path = _cache_file(cache)
    text = path.read_text()
    assert damage(text) != text
    path.write_text(damage(text))
    _same(load_rules(rules, env=ENV, cache_dir=cache), expected)
    _same(load_rules(rules, env=ENV, cache_dir=cache), expected)  # rewritten, or read again


def test_a_cache_others_could_write_is_ignored(rules: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    load_rules(rules, env=ENV, cache_dir=cache)
    path = _cache_file(cache)
    path.write_text(path.read_text().replace("Sign-ups", "Forged"))
    path.chmod(0o666)
    assert load_rules(rules, env=ENV, cache_dir=cache).rules.by_id["signups"].name == "Sign-ups"
    path.chmod(0o600)
    with mock.patch("os.getuid", return_value=os.getuid() + 1):  # another user's file
        loaded = load_rules(rules, env=ENV, cache_dir=cache)
    assert loaded.rules.by_id["signups"].name == "Sign-ups"


def test_a_cache_of_another_version_is_ignored(rules: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    load_rules(rules, env=ENV, cache_dir=cache)
    path = _cache_file(cache)
    path.write_text(path.read_text().replace("Sign-ups", "Forged"))
    with mock.patch.object(rules_cache, "__version__", "0.0.0-other"):
        loaded = load_rules(rules, env=ENV, cache_dir=cache)
    assert loaded.rules.by_id["signups"].name == "Sign-ups"


def test_queries_accepted_by_another_sqlglot_are_checked_again(rules: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    load_rules(rules, env=ENV, cache_dir=cache)
    path = _cache_file(cache)
    whole = json.loads(path.read_text())
    assert whole["statements"]
    whole["sqlglot"] = "0.0.1"
    path.write_text(json.dumps(whole))
    with mock.patch("kpiwatch.sources.sql_guard.statement_problem", return_value=None) as check:
        load_rules(rules, env=ENV, cache_dir=cache)
    assert check.call_count == 3  # signups, churn and full/'s retention_rate
    with mock.patch("kpiwatch.sources.sql_guard.statement_problem", return_value=None) as check:
        load_rules(rules, env=ENV, cache_dir=cache)
    assert check.call_count == 0  # written again, with this sqlglot's version


def test_an_unwritable_cache_directory_only_costs_the_cache(rules: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    loaded = load_rules(rules, env=ENV, cache_dir=tmp_path / "file" / "cache")
    _same(loaded, load_rules(rules, env=ENV))


def test_the_setting_defaults_to_the_user_cache_and_empty_turns_it_off(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("KPIWATCH_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert Settings().cache_dir == tmp_path / "xdg" / "kpiwatch"
    monkeypatch.setenv("KPIWATCH_CACHE_DIR", "")
    assert Settings().cache_dir is None
    monkeypatch.delenv("KPIWATCH_CACHE_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert Settings().cache_dir == tmp_path / "home" / ".cache" / "kpiwatch"


# ---------------------------------------------------------------- the encoding

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text()
    | st.dates()
    | st.datetimes()
    | st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-3, minutes=-30))]))
)
KEYS = st.text(max_size=4) | st.sampled_from(["\0date", "\0x"]) | SCALARS


def _containing(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4)


DATA = st.recursive(SCALARS, _containing, max_leaves=30)


def _identical(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (1 is not 1.0 nor True; -0.0 not 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and str(a) == str(b))
    if isinstance(a, datetime):
        return a == b and a.tzinfo == b.tzinfo and a.utcoffset() == b.utcoffset()
    if isinstance(a, list):
        return len(a) == len(b) and all(_identical(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            _identical(k, j) and _identical(v, w)
            for (k, v), (j, w) in zip(a.items(), b.items(), strict=True)
        )
    return bool(a == b)


@given(DATA)
def test_data_comes_back_as_it_was_written(data: Any) -> None:
    text = json.dumps(rules_cache.encode(data))
    assert _identical(rules_cache.decode(text), data)


def test_yaml_data_comes_back_as_it_was_written() -> None:
    data = yaml.safe_load(
        "a: [1, 1.0, -0.0, .inf, .nan, true, null, 2027-06-30, 2027-06-30 10:00:00+02:00,"
        " 2027-06-30T10:00:00.5, 0x1f, '1']\n1: {2: 3}\n"
    )
    assert _identical(rules_cache.decode(json.dumps(rules_cache.encode(data))), data)
    assert isinstance(data["a"][7], date)
