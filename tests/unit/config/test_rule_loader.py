"""The rule loader: the spec example, located errors, cross-file checks."""

from __future__ import annotations

import shutil
import textwrap
from datetime import date, timedelta
from pathlib import Path

import pytest

from kpiwatch.config.loader import LoadedRules, formula_references, load_rule_text, load_rules
from kpiwatch.config.rules import HttpSource, SqlSource
from kpiwatch.errors import ConfigError, RuleLoadError
from kpiwatch.model import Direction, Status

FULL = Path(__file__).parents[2] / "testdata" / "rules" / "full"
ENV = {"BILLING_TOKEN": "s3cret"}


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    """The problems of one document, as ``file:line:col: path: message`` strings."""
    with pytest.raises(RuleLoadError) as caught:
        load_rule_text(textwrap.dedent(text), "r.yaml", env=env or {})
    return [str(p) for p in caught.value.problems]


def load(text: str, env: dict[str, str] | None = None) -> LoadedRules:
    return load_rule_text(textwrap.dedent(text), "r.yaml", env=env or {})


# A valid KPI item; tests add or break one key at a time.
KPI = """\
kpis:
  - id: signups
    name: Sign-ups
    owner: sam@example.com
    direction: higher_is_better
    source: push
"""


# ---------------------------------------------------------------- the spec example


def test_full_example_loads() -> None:
    loaded = load_rules(FULL, env=ENV)
    rules = loaded.rules
    assert [p.relative_to(FULL).as_posix() for p in loaded.files] == [
        "churn.yaml",
        "growth/signups.yaml",
    ]
    warehouse, billing = rules.sources["warehouse"], rules.sources["billing"]
    assert isinstance(warehouse, SqlSource)
    assert warehouse.url == "sqlite:///demo/warehouse.db"
    assert isinstance(billing, HttpSource)
    assert billing.headers == {"Authorization": "Bearer s3cret"}
    assert billing.timeout == timedelta(seconds=10)
    assert rules.teams["customer-success"].email == ["cs-leads@example.com"]
    churn = rules.by_id["churn_rate"]
    assert churn.direction is Direction.LOWER_IS_BETTER
    assert churn.target is not None
    assert churn.target.by == date(2026, 12, 31)
    assert churn.trend is not None
    assert churn.trend.worsening_streak is not None
    assert churn.trend.worsening_streak.count == 3
    assert churn.trend.change is not None
    assert churn.trend.change.severity is Status.RED
    assert churn.for_ == 2
    assert churn.mute[0].for_ == timedelta(days=9)
    assert churn.leading == ["trial_signups"]
    assert rules.evaluation_order == ("churn_rate", "trial_signups", "retention_rate")


def test_full_example_locations() -> None:
    loaded = load_rules(FULL, env=ENV)
    churn, signups = str(FULL / "churn.yaml"), str(FULL / "growth" / "signups.yaml")
    assert loaded.locations == {
        "churn_rate": (churn, 19, 5),
        "trial_signups": (signups, 3, 5),
        "retention_rate": (signups, 13, 5),
    }
    assert loaded.team_locations == {"customer-success": (churn, 14, 3)}
    assert loaded.source_locations == {"warehouse": (churn, 2, 3), "billing": (churn, 6, 3)}


def test_environment_overrides_default_in_full_example() -> None:
    loaded = load_rules(FULL, env={**ENV, "WAREHOUSE_URL": "postgresql://db/kpis"})
    source = loaded.rules.sources["warehouse"]
    assert isinstance(source, SqlSource)
    assert source.url == "postgresql://db/kpis"


def test_fingerprint_is_stable_and_follows_content(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(FULL, rules)
    first = load_rules(rules, env=ENV).fingerprint
    assert load_rules(rules, env=ENV).fingerprint == first
    assert load_rules(FULL, env=ENV).fingerprint == first  # names are relative
    churn = rules / "churn.yaml"
    churn.write_text(churn.read_text() + "\n# a comment\n")
    assert load_rules(rules, env=ENV).fingerprint != first


def test_missing_variable_in_full_example_is_located() -> None:
    with pytest.raises(RuleLoadError) as caught:
        load_rules(FULL, env={})
    assert [str(p) for p in caught.value.problems] == [
        f"{FULL / 'churn.yaml'}:10:38: sources.billing.headers.Authorization: "
        "environment variable BILLING_TOKEN is not set "
        "(give a default with ${BILLING_TOKEN:-value})"
    ]


# ---------------------------------------------------------------- files and directories


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(RuleLoadError, match="rules directory does not exist") as caught:
        load_rules(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(caught.value)
    assert isinstance(caught.value, ConfigError)


def test_directory_without_rule_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("kpis: []")
    (tmp_path / ".hidden.yaml").write_text(KPI)  # editor leftovers are skipped
    with pytest.raises(RuleLoadError, match=r"no rule files \(\*\.yaml, \*\.yml\)"):
        load_rules(tmp_path)


def test_a_file_instead_of_a_directory(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(KPI)
    with pytest.raises(RuleLoadError, match="is not a directory"):
        load_rules(path)


def test_yml_and_subdirectories_load_sorted(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "one.yml").write_text(KPI.replace("signups", "b_one"))
    (tmp_path / "a.yaml").write_text(KPI.replace("signups", "a"))
    (tmp_path / "c.yaml").write_text("")
    loaded = load_rules(tmp_path, env={})
    assert [k.id for k in loaded.rules.kpis] == ["a", "b_one"]
    assert [p.name for p in loaded.files] == ["a.yaml", "one.yml", "c.yaml"]


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n", "~\n", "kpis: []\n"])
def test_empty_documents_are_fine(text: str) -> None:
    loaded = load_rule_text(text)
    assert loaded.rules.kpis == ()
    assert loaded.files == ()


def test_undecodable_file(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_bytes(b"kpis: []\n# caf\xe9\n")
    with pytest.raises(RuleLoadError) as caught:
        load_rules(tmp_path)
    assert [str(p) for p in caught.value.problems] == [
        f"{tmp_path / 'bad.yaml'}:2:6: not valid UTF-8 text"
    ]


# ---------------------------------------------------------------- YAML level


def test_yaml_syntax_error_is_located() -> None:
    assert problems("kpis:\n  - id: a\n    name: b: c\n") == [
        "r.yaml:3:12: unexpected ':' here: a value that contains ': ' must be quoted, and a "
        "key indented more than the key above it is read as part of that key's value"
    ]


def test_yaml_syntax_error_with_context() -> None:
    assert problems("kpis: [a, b\n") == [
        "r.yaml:2:1: expected ',' or ']', but got '<stream end>' "
        "(while parsing a flow sequence at line 1, column 7)"
    ]


def test_duplicate_yaml_key_is_an_error() -> None:
    text = KPI + "    name: Again\n"
    assert problems(text) == [
        "r.yaml:7:5: kpis[0].name: duplicate key 'name' (first at line 3, column 5)"
    ]


def test_merge_keys_are_not_duplicates() -> None:
    loaded = load(
        """\
        kpis:
          - &a {id: a, name: A, owner: sam@example.com, direction: higher_is_better, source: push}
          - {<<: *a, id: b, name: B}
        """
    )
    assert [(k.id, k.owner) for k in loaded.rules.kpis] == [
        ("a", "sam@example.com"),
        ("b", "sam@example.com"),
    ]


def test_bad_date_is_located() -> None:
    text = KPI + "    target: {value: 1, by: 2026-13-45}\n"
    assert problems(text) == [
        "r.yaml:7:28: cannot read '2026-13-45' as !!timestamp: month must be in 1..12"
    ]


def test_several_documents_are_rejected() -> None:
    assert problems("kpis: []\n---\nkpis: []\n") == [
        "r.yaml:2:1: but found another document "
        "(expected a single document in the stream at line 1, column 1)"
    ]


def test_top_level_must_be_a_mapping() -> None:
    assert problems("- a\n- b\n") == ["r.yaml:1:1: expected a mapping (key: value), got a list"]


# ---------------------------------------------------------------- model errors


def test_unknown_key_with_did_you_mean() -> None:
    text = KPI + "    treshold: {red: 5}\n"
    assert problems(text) == [
        "r.yaml:7:5: kpis[0].treshold: unknown key 'treshold'; did you mean 'thresholds'?"
    ]


def test_unknown_key_without_close_match_lists_the_allowed_keys() -> None:
    assert problems("teams:\n  cs: {pager: x}\n") == [
        "r.yaml:2:8: teams.cs.pager: unknown key 'pager'; allowed keys: slack, email, "
        "webhook, alertmanager, reminders"
    ]


def test_unknown_top_level_key() -> None:
    assert problems("kpi: []\n") == ["r.yaml:1:1: kpi: unknown key 'kpi'; did you mean 'kpis'?"]


def test_unknown_key_in_a_source_variant() -> None:
    text = "sources:\n  w:\n    type: sql\n    url: sqlite://\n    timout: 5s\n"
    assert problems(text) == [
        "r.yaml:5:5: sources.w.timout: unknown key 'timout'; did you mean 'timeout'?"
    ]


def test_wrong_enum_names_the_choices() -> None:
    text = KPI.replace("higher_is_better", "lower")
    assert problems(text) == [
        "r.yaml:5:16: kpis[0].direction: 'lower' is not one of higher_is_better, lower_is_better"
    ]


def test_bad_duration() -> None:
    text = KPI.replace("source: push", "source: formula\n    query: '1'") + "    every: 5 minutes\n"
    assert problems(text) == [
        "r.yaml:8:12: kpis[0].every: invalid duration '5 minutes': write a number and a unit "
        "s, m, h, d or w, e.g. 30s, 5m, 7d"
    ]


def test_thresholds_on_the_wrong_side() -> None:
    text = KPI + "    thresholds: {yellow: 10, red: 20}\n"
    assert problems(text) == [
        "r.yaml:7:17: kpis[0].thresholds: yellow 10 is on the wrong side of red 20 "
        "for higher_is_better (yellow must not be below red)"
    ]


def test_missing_required_keys_point_at_the_mapping() -> None:
    assert problems("kpis:\n  - id: a\n    source: push\n") == [
        "r.yaml:2:5: kpis[0]: missing required keys 'name', 'owner', 'direction'"
    ]


def test_missing_source_type() -> None:
    assert problems("sources:\n  w: {url: x}\n") == [
        "r.yaml:2:6: sources.w: missing key 'type' (one of sql, http, prometheus, csv)"
    ]


def test_unknown_source_type_points_at_type() -> None:
    assert problems("sources:\n  w: {type: mongo, url: x}\n") == [
        "r.yaml:2:13: sources.w.type: 'mongo' is not one of sql, http, prometheus, csv"
    ]


def test_errors_inside_source_variants() -> None:
    text = "sources:\n  files:\n    type: csv\n  db: {type: sql, url: x, timeout: 5}\n"
    assert problems(text) == [
        "r.yaml:3:5: sources.files: give exactly one of path or url",
        "r.yaml:4:36: sources.db.timeout: invalid duration 5: add a unit, e.g. 5s, 5m, 5d",
    ]


def test_alias_key_for_is_located() -> None:
    assert problems(KPI + "    for: 0\n") == [
        "r.yaml:7:10: kpis[0].for: must be greater than or equal to 1, got 0"
    ]


def test_union_errors_are_merged() -> None:
    text = "sources:\n  h: {type: http, url: x, verify: 5}\n"
    assert problems(text) == [
        "r.yaml:2:35: sources.h.verify: expected true or false or text, got 5"
    ]


def test_several_errors_are_reported_together() -> None:
    text = """\
    sources:
      w: {type: sql}
    kpis:
      - id: Bad-Id
        name: x
        owner: sam@example.com
        direction: up
        source: push
        every: soon
    """
    assert problems(text) == [
        "r.yaml:2:6: sources.w: missing required key 'url'",
        "r.yaml:4:9: kpis[0].id: 'Bad-Id' does not match ^[a-z0-9_]+$: "
        "use lowercase letters, digits and _",
        "r.yaml:7:16: kpis[0].direction: 'up' is not one of higher_is_better, lower_is_better",
        "r.yaml:9:12: kpis[0].every: invalid duration 'soon': write a number and a unit "
        "s, m, h, d or w, e.g. 30s, 5m, 7d",
    ]


def test_secrets_are_not_echoed() -> None:
    text = "sources:\n  h: {type: http, url: x, max_bytes: 'Bearer abc.def'}\n"
    (message,) = problems(text)
    assert "abc.def" not in message
    assert message.endswith("got 'Bearer ***'")


# ---------------------------------------------------------------- across files


def test_duplicate_ids_across_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(KPI)
    (tmp_path / "b.yaml").write_text("# second\n" + KPI)
    with pytest.raises(RuleLoadError) as caught:
        load_rules(tmp_path, env={})
    assert [str(p) for p in caught.value.problems] == [
        f"{tmp_path / 'b.yaml'}:3:9: kpis[0].id: duplicate KPI id 'signups' "
        f"(first defined at {tmp_path / 'a.yaml'}:2:5)"
    ]


def test_duplicate_sources_and_teams_across_files(tmp_path: Path) -> None:
    text = "sources:\n  w: {type: sql, url: x}\nteams:\n  cs: {}\n"
    (tmp_path / "a.yaml").write_text(text)
    (tmp_path / "b.yaml").write_text(text)
    with pytest.raises(RuleLoadError) as caught:
        load_rules(tmp_path, env={})
    b, a = tmp_path / "b.yaml", tmp_path / "a.yaml"
    assert [str(p) for p in caught.value.problems] == [
        f"{b}:2:3: sources.w: duplicate source 'w' (first defined at {a}:2:3)",
        f"{b}:4:3: teams.cs: duplicate team 'cs' (first defined at {a}:4:3)",
    ]


def test_reserved_source_name() -> None:
    assert problems("sources:\n  push: {type: sql, url: x}\n") == [
        "r.yaml:2:3: sources.push: source name 'push' is reserved for the builtin push source"
    ]


def test_unknown_source_and_team_with_suggestion() -> None:
    text = """\
    sources:
      warehouse: {type: sql, url: x}
    teams:
      growth: {}
    kpis:
      - id: a
        name: A
        owner: sam@example.com
        direction: higher_is_better
        source: wharehouse
        query: SELECT 1
        team: grwoth
    """
    assert problems(text) == [
        "r.yaml:10:13: kpis[0].source: unknown source 'wharehouse'; did you mean 'warehouse'?",
        "r.yaml:12:11: kpis[0].team: unknown team 'grwoth'; did you mean 'growth'?",
    ]


def test_unknown_team_without_teams() -> None:
    assert problems(KPI + "    team: growth\n") == [
        "r.yaml:7:11: kpis[0].team: unknown team 'growth' (no teams are declared)"
    ]


def test_references_to_items_of_an_invalid_file_are_not_reported(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("sources:\n  w: {type: sql}\n")  # invalid: no url
    (tmp_path / "b.yaml").write_text(KPI.replace("source: push", "source: w\n    query: q"))
    with pytest.raises(RuleLoadError) as caught:
        load_rules(tmp_path, env={})
    assert [str(p) for p in caught.value.problems] == [
        f"{tmp_path / 'a.yaml'}:2:6: sources.w: missing required key 'url'"
    ]


def test_valid_kpis_of_an_invalid_file_are_still_cross_checked() -> None:
    text = KPI + "  - {id: broken}\n" + KPI.removeprefix("kpis:\n")
    assert problems(text) == [
        "r.yaml:7:5: kpis[1]: missing required keys 'name', 'owner', 'direction', 'source'",
        "r.yaml:8:9: kpis[2].id: duplicate KPI id 'signups' (first defined at r.yaml:2:5)",
    ]


def test_leading_must_name_known_kpis() -> None:
    assert problems(KPI + "    leading: [signup]\n") == [
        "r.yaml:7:15: kpis[0].leading[0]: unknown KPI 'signup'; did you mean 'signups'?"
    ]


# ---------------------------------------------------------------- formulas


def formula(kpi_id: str, query: str) -> str:
    return (
        f"  - {{id: {kpi_id}, name: {kpi_id}, owner: sam@example.com, "
        f"direction: higher_is_better, source: formula, query: '{query}'}}\n"
    )


def test_formula_with_unknown_input() -> None:
    text = KPI + formula("ratio", "signup / 2")
    assert problems(text) == [
        "r.yaml:7:107: kpis[1].query: formula reads an unknown KPI 'signup'; "
        "did you mean 'signups'?"
    ]


def test_formula_syntax_error() -> None:
    assert problems(KPI + formula("ratio", "signups +")) == [
        "r.yaml:7:107: kpis[1].query: formula does not parse: invalid syntax"
    ]


def test_formula_cycle() -> None:
    text = "kpis:\n" + formula("a", "b + 1") + formula("b", "a * 2")
    assert problems(text) == ["r.yaml:2:99: kpis[0].query: formula cycle: a -> b -> a"]


def test_formula_reading_itself() -> None:
    assert problems("kpis:\n" + formula("a", "a + 1")) == [
        "r.yaml:2:99: kpis[0].query: formula cycle: a -> a"
    ]


def test_formula_functions_are_not_kpis() -> None:
    loaded = load(KPI + formula("capped", "min(signups, 100)"))
    assert loaded.rules.formula_inputs["capped"] >= {"signups"}
    assert formula_references("min(signups, 100) + abs(x)") == {"signups", "x"}


# ---------------------------------------------------------------- odd input


def test_control_character_is_located() -> None:
    assert problems("kpis: []\n\x07\n") == [
        "r.yaml:2:1: special characters are not allowed: character #x0007"
    ]


def test_odd_keys_are_quoted_in_paths() -> None:
    assert problems('teams:\n  cs: {"a b": 1}\n') == [
        "r.yaml:2:8: teams.cs['a b']: unknown key 'a b'; allowed keys: slack, email, "
        "webhook, alertmanager, reminders"
    ]


def test_huge_values_are_problems_not_crashes() -> None:
    text = KPI + "    max_age: 99999999999999999999w\n    review_time: 99999999999\n"
    assert problems(text) == [
        "r.yaml:7:14: kpis[0].max_age: invalid duration '99999999999999999999w': too long",
        "r.yaml:8:18: kpis[0].review_time: invalid review_time 99999999999: "
        "expected HH:MM, e.g. 09:00",
    ]


def test_environment_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KPIWATCH_TEST_OWNER", "env@example.com")
    loaded = load_rule_text(KPI.replace("sam@example.com", "${KPIWATCH_TEST_OWNER}"))
    assert loaded.rules.kpis[0].owner == "env@example.com"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "kpis:\n  - id: a\n    name: b\n   direction: lower_is_better\n",
            "r.yaml:4:4: this line is not lined up with the keys above it: indent it exactly "
            "as far as the other keys of its item (which starts at line 2, column 3)",
        ),
        (
            "kpis:\n  - id: a\n    name: b\n - id: c\n",
            "r.yaml:4:2: this list item is indented differently from the list it belongs "
            "to: line its '-' up with the list's other items",
        ),
        ("kpis:\n  - id: a\n\tname: b\n", "r.yaml:3:1: a tab: YAML is indented with spaces only"),
        (
            'kpis:\n  - id: a\n    name "b"\n    owner: x\n',
            "r.yaml:4:5: a key without ':' (or an unclosed quote) in the block starting at "
            "line 3, column 5",
        ),
    ],
)
def test_indentation_mistakes_are_said_in_words(text: str, expected: str) -> None:
    assert problems(text) == [expected]


# ---------------------------------------------------------------- data incidents (SPEC §5a)


def test_a_sql_source_may_declare_freshness_and_a_kpi_its_blind_notice_after() -> None:
    loaded = load("""\
        sources:
          wh:
            type: sql
            url: sqlite:///wh.db
            owner: data@example.com
            freshness: {query: "SELECT max(loaded_at) FROM etl_runs", max_age: 6h}
        kpis:
          - {id: churn, name: Churn, owner: dana@example.com, direction: lower_is_better,
             source: wh, query: SELECT 1, blind_notice_after: 4h}
        """)
    source = loaded.rules.sources["wh"]
    assert isinstance(source, SqlSource)
    assert source.freshness is not None
    assert source.freshness.query == "SELECT max(loaded_at) FROM etl_runs"
    assert (source.freshness.max_age, source.freshness.every) == (
        timedelta(hours=6), timedelta(minutes=15),
    )  # fmt: skip
    assert loaded.rules.by_id["churn"].blind_notice_after == timedelta(hours=4)
    assert loaded.rules.kpis_of_source == {"wh": ("churn",)}


def test_a_freshness_query_is_checked_like_a_kpis_and_located() -> None:
    found = problems("""\
        sources:
          wh:
            type: sql
            url: sqlite:///wh.db
            freshness: {query: "DELETE FROM etl_runs", max_age: 6h}
        """)
    assert len(found) == 1
    assert found[0].startswith("r.yaml:5:")
    assert "sources.wh.freshness.query: " in found[0]
    missing = problems("""\
        sources:
          wh: {type: sql, url: "sqlite:///wh.db", freshness: {query: SELECT 1}}
        """)
    assert missing == ["r.yaml:2:54: sources.wh.freshness: missing required key 'max_age'"]


def test_a_duplicate_id_is_one_problem_not_a_false_formula_cycle(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(textwrap.dedent("""\
        kpis:
          - {id: cac, name: CAC, owner: a@x.com, direction: lower_is_better, source: formula,
             query: spend / customers}
          - {id: spend, name: Spend, owner: a@x.com, direction: lower_is_better, source: push}
          - {id: customers, name: Customers, owner: a@x.com, direction: higher_is_better,
             source: push}
        """))
    (tmp_path / "b.yaml").write_text(textwrap.dedent("""\
        kpis:
          - {id: spend, name: Spend again, owner: a@x.com, direction: lower_is_better,
             source: formula, query: cac * customers}
        """))
    with pytest.raises(RuleLoadError) as caught:
        load_rules(tmp_path, env={})
    found = [str(p) for p in caught.value.problems]
    assert len(found) == 1, found
    assert "duplicate KPI id 'spend'" in found[0]
