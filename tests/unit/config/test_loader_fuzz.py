"""Hostile rule files: any input loads, or is refused with located problems, quickly.

Properties over the rule loader (``load_rule_text`` and ``load_rules``): whatever the
text, bytes or environment, the result is a :class:`LoadedRules` or a RuleLoadError
whose problems each read ``file:line:col: path: message`` with a real position, and
never another exception, a Python repr or a hang. ``tests/unit/config/test_rule_fuzz.py``
fuzzes random documents; this file fuzzes hostile text and mutations of a valid one.
"""

from __future__ import annotations

import copy
import functools
import math
import re
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from kpiwatch.config.lint import lint
from kpiwatch.config.loader import LoadedRules, load_rule_text, load_rules
from kpiwatch.errors import RuleLoadError, RuleProblem

FUZZ = settings(
    max_examples=120,
    deadline=None,  # wall-clock deadlines flake on a loaded runner; pytest-timeout bounds a hang
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FILE = "fuzz.yaml"

# what no message for people may contain: Python's reprs and internals
PYTHON_REPRS = re.compile(r"<class |Traceback|object at 0x|datetime\.(date|datetime|time)\(")

VALID: dict[str, Any] = {
    "sources": {
        "warehouse": {"type": "sql", "url": "sqlite:///demo.db", "timeout": "30s"},
        "billing": {
            "type": "http",
            "owner": "data-platform@example.com",
            "url": "https://billing.internal/api/kpis",
            "headers": {"Authorization": "Bearer t0ken"},
            "params": {"tenant": "eu"},
            "auth": {"username": "kpi", "password": "pw"},
            "timeout": "10s",
            "verify": False,
            "max_bytes": 4096,
            "retries": 2,
        },
        "prom": {"type": "prometheus", "url": "http://prom:9090", "step": "5m"},
        "sheet": {"type": "csv", "path": "kpis.csv", "timestamp_column": "date"},
    },
    "teams": {
        "customer-success": {"slack": "#cs-kpis", "email": ["cs-leads@example.com"]},
        "growth": {"email": "growth@example.com", "webhook": "https://hooks.example.com/x"},
    },
    "kpis": [
        {
            "id": "churn_rate",
            "name": "Monthly churn rate",
            "description": "Share of paying customers lost in the month.",
            "owner": "dana@example.com",
            "team": "customer-success",
            "unit": "%",
            "direction": "lower_is_better",
            "source": "warehouse",
            "query": "SELECT month, churn_pct FROM monthly_churn ORDER BY month",
            "every": "1h",
            "review": "monthly",
            "thresholds": {"yellow": 4.5, "red": 5.5},
            "target": {
                "value": 3.5,
                "by": date(2026, 12, 31),
                "baseline": 5.0,
                "baseline_date": date(2026, 1, 1),
            },
            "trend": {
                "worsening_streak": 3,
                "change": {"max_pct": 20, "over": "7d", "severity": "red"},
                "off_track": "yellow",
            },
            "for": 2,
            "max_age": "2d",
            "no_data": "unknown",
            "escalation": {"review": "weekly", "stable_for": "14d"},
            "mute": [{"cron": "0 0 24 12 *", "for": "9d", "comment": "year-end freeze"}],
            "notify": {"slack": "#churn-war-room", "email": ["dana@example.com"]},
            "labels": {"kind": "lagging", "level": "strategic"},
            "leading": ["trial_signups"],
        },
        {
            "id": "trial_signups",
            "name": "Trial signups",
            "owner": "gus@example.com",
            "team": "growth",
            "direction": "higher_is_better",
            "source": "billing",
            "query": "data.signups[-30:]",
            "params": {"window": "30d"},
            "cron": "0 8 * * MON-FRI",
            "review": "weekly",
            "review_time": "09:30",
            "thresholds": {"yellow": 100, "red": 50},
            "labels": {"kind": "leading"},
        },
        {
            "id": "p99_latency",
            "name": "p99 latency",
            "owner": "ops@example.com",
            "direction": "lower_is_better",
            "source": "prom",
            "query": "histogram_quantile(0.99, sum(rate(x[5m])) by (le))",
            "range": "1d",
            "thresholds": {"red": 0.5},
        },
        {
            "id": "nps",
            "name": "NPS",
            "owner": "cx@example.com",
            "direction": "higher_is_better",
            "source": "sheet",
            "query": "nps",
            "target": {"value": 40},
        },
        {
            "id": "signups_per_churn",
            "name": "Signups per churned point",
            "owner": "gus@example.com",
            "direction": "higher_is_better",
            "source": "formula",
            "query": "trial_signups / max(churn_rate, 0.1)",
        },
        {
            "id": "survey",
            "name": "Survey score",
            "owner": "cx@example.com",
            "direction": "higher_is_better",
            "source": "push",
            "no_data": "keep_last",
            "escalation": {"stable_for": 3},
        },
    ],
}
VALID_TEXT = yaml.safe_dump(VALID, sort_keys=False, allow_unicode=True)

Path_ = tuple[str | int, ...]


def _paths(value: Any, path: Path_ = ()) -> Iterator[Path_]:
    """Every path inside ``value`` (not the root itself)."""
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return
    for key, child in items:
        yield (*path, key)
        yield from _paths(child, (*path, key))


PATHS = sorted(_paths(VALID), key=lambda p: tuple(map(str, p)))


def _at(document: Any, path: Path_) -> Any:
    for seg in path:
        document = document[seg]
    return document


LEAVES = [p for p in PATHS if not isinstance(_at(VALID, p), dict | list)]

# ---------------------------------------------------------------- checks


def _load(text: str, env: dict[str, str] | None = None) -> LoadedRules | RuleLoadError:
    """Load, insisting on the contract: LoadedRules or RuleLoadError, nothing else."""
    try:
        loaded = load_rule_text(text, FILE, env={} if env is None else env)
    except RuleLoadError as exc:
        _check_problems(exc)
        return exc
    for problem in lint(loaded):  # loaded rules must survive the linter too
        assert problem.line >= 1, problem
    return loaded


def _check_problems(exc: RuleLoadError, *, file: str = FILE) -> None:
    assert exc.problems, "a RuleLoadError lists at least one problem"
    for problem in exc.problems:
        assert problem.file == file, problem
        assert problem.line >= 1, problem
        assert problem.column >= 1, problem
        assert problem.message.strip(), problem
        assert not PYTHON_REPRS.search(problem.message), problem
        where = f"{problem.path}: " if problem.path else ""
        assert str(problem) == f"{file}:{problem.line}:{problem.column}: {where}{problem.message}"
    assert str(exc) == "\n".join(str(p) for p in exc.problems)


# ---------------------------------------------------------------- hostile text

# fragments of YAML, so random text reaches past the scanner more often than by chance
FRAGMENTS = [
    "kpis:",
    "sources:",
    "teams:",
    "\n",
    "\n  ",
    "\n  - ",
    "- ",
    "id: a",
    "source: push",
    "direction: lower_is_better",
    "thresholds: {red: ",
    ": ",
    "? ",
    ", ",
    "[",
    "]",
    "{",
    "}",
    "&a ",
    "*a",
    "&b [*a, *a, *a]",
    "<<: ",
    "<<: [*a, *a]",
    "!!python/object/apply:os.system ['true']",
    "!!python/name:os.system",
    "!!binary ",
    "!!int ",
    "!!float ",
    "!!timestamp ",
    "!!set ",
    "!!omap ",
    "!local ",
    "%YAML 1.1\n",
    "%TAG ! tag:x,2024:\n",
    "---\n",
    "...\n",
    "|\n",
    ">-\n",
    "'",
    '"',
    "\\",
    "#",
    "\t",
    "\x00",
    "\x07",
    "\x85",
    "\u2028",
    "\ufeff",
    "\U0001f4a5",
    "${X}",
    "${X:-1}",
    "${",
    "$${",
    "${MISSING}",
    "1e400",
    "-.inf",
    ".nan",
    "9" * 400,
    "0x" + "f" * 40,
    "0o777",
    "1_000",
    "2026-02-30",
    "2026-12-31",
    "2026-01-01T00:00:00+25:00",
    "09:00",
    "99:99:99",
    "5m",
    "0.0000001s",
    "1h30m",
    "0 8 * * *",
    "*/0 * * * *",
    "yes",
    "~",
    "null",
]
YAMLISH = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=6), max_size=40).map("".join)

A_PUSH_KPI = "kpis:\n- {id: a, name: A, owner: o, direction: lower_is_better, source: push"
A_FORMULA = (
    "kpis:\n- {id: a, name: A, owner: o, direction: lower_is_better, source: formula, query: "
)


@FUZZ
@given(st.text(max_size=300) | YAMLISH)
@example("\x00")
@example("a: \ud800")  # a lone surrogate: not even encodable
@example("[" * 2000 + "]" * 2000)  # deeper than the recursion limit
@example("kpis: " + "[" * 900 + "]" * 900)
@example("kpis:\n" + "".join(" " * i + "- \n" for i in range(1200)))
@example(A_FORMULA + "-" * 100_000 + "a}\n")  # bug: ast.parse raised MemoryError
@example(A_FORMULA + "(" * 500 + "a" + ")" * 500 + "}\n")
@example(A_PUSH_KPI + ", every: 0.0000001s}\n")  # bug: a zero poll interval was accepted
@example(A_PUSH_KPI + ", thresholds: {red: .nan}}\n")  # bug: a NaN threshold was accepted
@example(A_PUSH_KPI + ", target: {value: .inf}}\n")
@example(A_PUSH_KPI + ", review_time: 2020-01-01}\n")  # bug: message showed datetime.date(...)
@example(A_PUSH_KPI + ", max_age: 2020-01-01}\n")
@example(A_PUSH_KPI + ", labels: !!binary AAAA}\n")
@example(A_PUSH_KPI + ", escalation: {stable_for: [2000-01-01]}}\n")  # was: datetime.date(...)
@example(A_PUSH_KPI + ", every: " + "9" * 5000 + "}\n")  # was: a 5,000-digit message
@example(A_PUSH_KPI + ", labels: !!python/object:os.system {}}\n")
@example("a: !!int\n")  # bug: IndexError from PyYAML's int constructor
@example("? !!float ''\n")
@example("kpis: !!bool x\n")  # bug: KeyError
@example("kpis: !!timestamp x\n")  # bug: AttributeError
@example("a: &a [x]\nb: &b [*a, *a]\nkpis: &c [*b, *b]\n")
@example("a: &a [*a]\nkpis: *a\n")  # an alias to itself
def test_any_text_loads_or_is_refused_with_located_problems(text: str) -> None:
    _load(text)


@FUZZ
@given(st.binary(max_size=300) | YAMLISH.map(lambda t: t.encode("utf-8", "surrogatepass")))
@example(b"kpis: \xff\xfe\n")
@example(b"\xef\xbb\xbfkpis: []\n")  # a byte-order mark
@example(b"kpis:\n  - id: \xc3\n")  # a UTF-8 sequence cut short
@example(b"kpis: [\xed\xa0\x80]\n")  # an encoded surrogate: not UTF-8
def test_any_bytes_in_a_rules_directory_load_or_are_refused(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rules_dir = Path(tmp)
        (rules_dir / "hostile.yaml").write_bytes(raw)
        (rules_dir / "good.yml").write_text("teams: {ops: {slack: '#ops'}}\n", encoding="utf-8")
        try:
            loaded = load_rules(rules_dir, env={})
        except RuleLoadError as exc:
            for problem in exc.problems:
                assert problem.file in (
                    str(rules_dir / "hostile.yaml"),
                    str(rules_dir / "good.yml"),
                )
                assert problem.line >= 1, problem
                assert not PYTHON_REPRS.search(problem.message), problem
        else:
            assert "ops" in loaded.rules.teams


# ---------------------------------------------------------------- mutated valid documents

NUMBERS = (
    st.integers()
    | st.integers(min_value=2**63 - 2, max_value=2**70)
    | st.sampled_from([0, -1, 10**40, -(10**40)])
    | st.floats()  # nan and ±inf included
    | st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e308, 5e-324])
)
TEXTS = st.text(max_size=12) | st.sampled_from(
    [
        "",
        " ",
        "sql",
        "http",
        "csv",
        "prometheus",
        "push",
        "formula",
        "higher_is_better",
        "red",
        "weekly",
        "keep_last",
        "0s",
        "-5m",
        "1.5e3s",
        "99999999999999999999d",
        "0.0000001s",
        "25:00",
        "a+",
        "churn_rate",
        "churn_rate / 0",
        "__import__('os')",
        "0 0 31 2 *",
        "*/0 * * * *",
        "${X}",
        "${",
        "Bearer xoxb-123-secret",
    ]
)
MOMENTS = (
    st.dates()
    | st.datetimes()
    | st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-12))]))
)
SCALARS = st.none() | st.booleans() | NUMBERS | TEXTS | MOMENTS
VALUES: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXTS, inner, max_size=3),
    max_leaves=8,
)
UNKNOWN_KEYS = st.sampled_from(["kind", "tresholds", "Owner", "for_", "<<", "1"]) | st.text(
    max_size=8
)

# (what, where, a value or a key): applied in order to a copy of VALID
MUTATIONS = st.lists(
    st.tuples(
        st.sampled_from(["drop", "replace", "add"]), st.sampled_from(PATHS), VALUES, UNKNOWN_KEYS
    ),
    min_size=1,
    max_size=4,
)


def _mutate(document: Any, mutations: list[tuple[str, Path_, Any, str]]) -> Any:
    document = copy.deepcopy(document)
    for kind, path, value, key in mutations:
        try:
            parent = _at(document, path[:-1])
            parent[path[-1]]  # (the path may be gone after an earlier mutation)
        except (KeyError, IndexError, TypeError):
            continue
        if kind == "drop":
            del parent[path[-1]]
        elif kind == "replace":
            parent[path[-1]] = value
        elif isinstance(parent, dict):
            parent[key] = value
        else:
            parent.append(value)
    return document


def test_the_valid_document_loads() -> None:
    loaded = _load(VALID_TEXT)
    assert isinstance(loaded, LoadedRules)
    assert len(loaded.rules.kpis) == len(VALID["kpis"])


@FUZZ
@given(MUTATIONS)
@example([("replace", ("kpis", 0, "thresholds", "red"), math.nan, "")])  # bug: NaN accepted
@example([("replace", ("kpis", 0, "target", "value"), math.inf, "")])  # bug: inf accepted
@example([("replace", ("kpis", 0, "every"), "0.0000001s", "")])  # bug: zero interval accepted
@example([("replace", ("kpis", 0, "max_age"), date(2020, 1, 1), "")])  # bug: Python repr
@example([("replace", ("kpis", 0, "mute", 0, "cron"), datetime(2020, 1, 1), "")])
@example([("replace", ("kpis", 1, "review_time"), date(2020, 1, 1), "")])
@example([("replace", ("kpis", 4, "query"), "-" * 100_000 + "a", "")])  # bug: MemoryError
@example([("add", ("kpis", 0, "labels"), None, "<<")])
@example([("replace", ("kpis", 0, "for"), 10**40, "")])
@example([("replace", ("kpis", 0, "escalation", "stable_for"), [date(2000, 1, 1)], "")])  # CI
@example([("replace", ("kpis", 5, "escalation", "stable_for"), None, "")])  # was: None
@example([("replace", ("sources", "warehouse", "type"), [date(2000, 1, 1)], "")])  # was: repr
def test_mutated_valid_documents_load_or_name_each_problem(
    mutations: list[tuple[str, Path_, Any, str]],
) -> None:
    text = yaml.safe_dump(_mutate(VALID, mutations), sort_keys=False, allow_unicode=True)
    result = _load(text)
    if isinstance(result, RuleLoadError):
        for problem in result.problems:  # a valid root: every problem is somewhere in it
            assert problem.path, problem


def _outcome(text: str, env: dict[str, str] | None = None) -> LoadedRules | str:
    try:
        return load_rule_text(text, FILE, env=env or {})
    except RuleLoadError as exc:
        return str(exc)


@FUZZ
@given(MUTATIONS.map(lambda m: yaml.safe_dump(_mutate(VALID, m), sort_keys=False)) | YAMLISH)
@example(VALID_TEXT)
@example("a: !\n")  # libyaml reads a bare ! as text, PyYAML as null
@example("kpis:\n\t- {}\n")
def test_the_fast_path_loads_what_the_careful_one_does(text: str) -> None:
    fast = _outcome(text)
    with mock.patch("kpiwatch.config.loader.fast_possible", return_value=False):
        careful = _outcome(text)  # PyYAML's Python parser only, as before libyaml

    if isinstance(fast, str) or isinstance(careful, str):
        assert fast == careful
    else:
        assert (fast.rules, fast.locations) == (careful.rules, careful.locations)
        assert (fast.team_locations, fast.source_locations) == (
            careful.team_locations,
            careful.source_locations,
        )


# ---------------------------------------------------------------- ${VAR}

ENV_VALUES = st.text(max_size=20) | st.sampled_from(
    ["", "${X}", "$${", "[1, 2]", "{a: 1}", "1e400", ".nan", "- a", "\x00", "a\nb: c", "&x", "*x"]
)


@FUZZ
@given(
    st.lists(
        st.tuples(st.sampled_from(LEAVES), st.sampled_from(["plain", "default", "inside"])),
        min_size=1,
        max_size=5,
    ),
    st.dictionaries(st.sampled_from(["V0", "V1", "V2", "V3", "V4"]), ENV_VALUES, max_size=5),
)
def test_references_with_any_environment_load_or_are_refused(
    where: list[tuple[Path_, str]], env: dict[str, str]
) -> None:
    document = copy.deepcopy(VALID)
    names: dict[str, Path_] = {}
    for i, (path, form) in enumerate(where):
        name = f"V{i}"
        reference = {"plain": f"${{{name}}}", "default": f"${{{name}:-7}}"}.get(
            form, f"a ${{{name}}} b"
        )
        parent = _at(document, path[:-1])
        parent[path[-1]] = reference
        names[name] = path
    result = _load(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), env)
    if isinstance(result, RuleLoadError):
        for problem in result.problems:
            if "is not set" in problem.message:  # names a variable that really is missing
                missing = re.search(r"variable (\w+) is not set", problem.message)
                assert missing, problem
                assert missing[1] not in env, problem


@FUZZ
@given(
    st.lists(
        st.tuples(st.sampled_from(LEAVES), st.sampled_from(["plain", "default", "inside"])),
        min_size=1,
        max_size=5,
    ),
    st.dictionaries(st.sampled_from(["V0", "V1", "V2", "V3", "V4"]), ENV_VALUES, max_size=5),
    st.sampled_from(["", "  unit: $\n", "x: &a {u: ${V0}}\ny: *a\n", "x: [${V0:-1}, $${V1}]\n"]),
)
def test_the_fast_path_substitutes_what_the_careful_one_does(
    where: list[tuple[Path_, str]], env: dict[str, str], extra: str
) -> None:
    # the fast path substitutes while it constructs; the careful one in the tree first
    document = copy.deepcopy(VALID)
    for i, (path, form) in enumerate(where):
        reference = {"plain": f"${{V{i}}}", "default": f"${{V{i}:-7}}"}.get(form, f"a ${{V{i}}} b")
        _at(document, path[:-1])[path[-1]] = reference
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True) + extra
    fast = _outcome(text, env)
    with mock.patch("kpiwatch.config.loader.fast_possible", return_value=False):
        careful = _outcome(text, env)

    if isinstance(fast, str) or isinstance(careful, str):
        assert fast == careful
    else:
        assert (fast.rules, fast.locations) == (careful.rules, careful.locations)


@functools.cache
def _valid_rules() -> Any:
    return load_rule_text(VALID_TEXT, FILE, env={}).rules


@FUZZ
@given(st.lists(st.sampled_from(LEAVES), min_size=1, max_size=6, unique=True))
def test_references_to_the_values_as_written_give_the_same_rules(paths: list[Path_]) -> None:
    """Moving any scalars into the environment, written as in the file, changes nothing."""
    document = copy.deepcopy(VALID)
    env = {}
    for i, path in enumerate(paths):
        value = _at(VALID, path)
        written = yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()
        assume(not written.startswith(("'", '"')))  # quoted in the file: not a plain scalar
        env[f"V{i}"] = written
        _at(document, path[:-1])[path[-1]] = f"${{V{i}}}"
    loaded = _load(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), env)
    assert isinstance(loaded, LoadedRules), loaded
    assert loaded.rules == _valid_rules()


def test_a_missing_variable_names_the_file_line_and_variable() -> None:
    text = VALID_TEXT.replace("url: sqlite:///demo.db", "url: ${WAREHOUSE_URL}")
    line = text.splitlines().index("    url: ${WAREHOUSE_URL}") + 1
    with pytest.raises(RuleLoadError) as caught:
        load_rule_text(text, FILE, env={"OTHER": "x"})
    (problem,) = caught.value.problems
    assert (problem.line, problem.column) == (line, 10)
    assert problem.path == "sources.warehouse.url"
    assert "WAREHOUSE_URL is not set" in problem.message


# ---------------------------------------------------------------- expansion and depth


def _laughs(levels: int, fanout: int = 9) -> str:
    """The "billion laughs": each anchor repeats the previous one ``fanout`` times."""
    lines = ["l0: &l0 [lol]"]
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * fanout)}]")
    return "\n".join(lines) + "\n"


def _merge_laughs(levels: int, fanout: int = 9) -> str:
    """The same through merge keys, which PyYAML does copy: 9**levels keys."""
    lines = ["m0: &m0 {a: 1, b: 2}"]
    for i in range(1, levels + 1):
        lines.append(f"m{i}: &m{i} {{<<: [{', '.join([f'*m{i - 1}'] * fanout)}]}}")
    return "\n".join(lines) + "\n"


def _timed_refusal(text: str) -> tuple[RuleLoadError, float]:
    """The error and the CPU seconds it took: a busy CI runner's other work does not count."""
    start = time.process_time()
    with pytest.raises(RuleLoadError) as caught:
        load_rule_text(text, FILE, env={})
    elapsed = time.process_time() - start
    _check_problems(caught.value)
    return caught.value, elapsed


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(_laughs(9) + "kpis: *l9\n", id="list-aliases-as-kpis"),
        pytest.param(
            _laughs(9) + A_PUSH_KPI + ", labels: {x: *l9}, leading: *l9}\n", id="list-aliases-deep"
        ),
        pytest.param(_merge_laughs(9) + "kpis: [*m9]\n", id="merge-keys"),  # bug: hung
        pytest.param(_merge_laughs(9) + A_PUSH_KPI + ", <<: *m9}\n", id="merge-into-kpi"),
    ],
)
def test_a_billion_laughs_is_refused_quickly_not_expanded(text: str) -> None:
    error, elapsed = _timed_refusal(text)

    assert elapsed < 1.0, f"took {elapsed:.1f}s"
    assert any("alias" in p.message for p in error.problems), error


@pytest.mark.parametrize(
    "text",
    [
        # PyYAML's scanner looks 1,024 characters ahead, quadratically: ~0.3 s, whatever the depth
        pytest.param("[" * 100_000, id="flow"),
        pytest.param("kpis:\n" + "".join(" " * i + "- \n" for i in range(3000)), id="block"),
        pytest.param("{a: " * 20_000 + "1" + "}" * 20_000, id="flow-mappings"),
    ],
)
def test_deep_nesting_is_refused_quickly(text: str) -> None:
    error, elapsed = _timed_refusal(text)

    assert elapsed < 1.0, f"took {elapsed:.1f}s"
    assert "nested" in str(error)


def test_a_large_document_without_aliases_is_not_a_billion_laughs() -> None:
    # the limit once counted values but not keys: 10,000 KPIs of a dozen keys each and a
    # `count(*)` somewhere (the '*' makes the check run) were refused as a "billion laughs"
    kpis = "".join(
        f"  - {{id: k{i}, name: K, owner: o, direction: lower_is_better, source: push,"
        f" description: 'count(*)', unit: x, every: 5m, review: weekly, for: 2}}\n"
        for i in range(40)
    )
    with mock.patch("kpiwatch.config.document.MAX_ALIASED", 300):  # 40 x 11 keys > 300
        loaded = load_rule_text("kpis:\n" + kpis, FILE, env={})
        assert len(loaded.rules.kpis) == 40
        with pytest.raises(RuleLoadError, match="billion laughs"):  # and aliases still count
            load_rule_text(_laughs(3) + "kpis:\n" + kpis, FILE, env={})


def test_a_small_merge_is_still_a_merge() -> None:
    text = (
        "kpis:\n"
        "  - &first {id: a, name: A, owner: o, direction: lower_is_better, source: push}\n"
        "  - {<<: *first, id: b, owner: p}\n"
        "  - {<<: [*first], id: c}\n"
    )
    loaded = load_rule_text(text, FILE, env={})
    assert [(k.id, k.name, k.owner) for k in loaded.rules.kpis] == [
        ("a", "A", "o"),
        ("b", "A", "p"),
        ("c", "A", "o"),
    ]


@pytest.mark.parametrize(
    ("text", "at", "path", "message"),
    [
        (
            A_FORMULA + "-" * 100_000 + "a}\n",  # was: MemoryError
            "---",
            "kpis[0].query",
            "formula does not parse: nested too deeply (simplify the expression)",
        ),
        (
            A_PUSH_KPI + ", every: 0.0000001s}\n",  # was: accepted as a zero interval
            "0.0000001s",
            "kpis[0].every",
            "invalid duration '0.0000001s': must be greater than zero",
        ),
        (
            A_PUSH_KPI + ", thresholds: {red: .nan}}\n",  # was: accepted
            ".nan",
            "kpis[0].thresholds.red",
            "expected a finite number, got .nan",
        ),
        (
            A_PUSH_KPI + ", target: {value: -.inf}}\n",  # was: accepted
            "-.inf",
            "kpis[0].target.value",
            "expected a finite number, got -.inf",
        ),
        (
            A_PUSH_KPI + ", review_time: 2020-01-01}\n",  # was: datetime.date(2020, 1, 1)
            "2020-01-01",
            "kpis[0].review_time",
            "expected a time (HH:MM), got 2020-01-01",
        ),
        (
            A_PUSH_KPI + ", max_age: 2020-01-01}\n",
            "2020-01-01",
            "kpis[0].max_age",
            "invalid duration 2020-01-01: expected text such as 30s, 5m, 7d",
        ),
        (
            A_PUSH_KPI + ", labels: !!binary AAAA}\n",  # was: b'\\x00\\x00\\x00'
            "!!binary",
            "kpis[0].labels",
            "expected a mapping (key: value), got binary data (3 bytes)",
        ),
        (
            A_PUSH_KPI + ", escalation: {stable_for: [2000-01-01]}}\n",  # CI: a Python repr
            "[2000",
            "kpis[0].escalation.stable_for",
            "invalid duration [2000-01-01]: expected text such as 30s, 5m, 7d",
        ),
        (
            A_PUSH_KPI + ", escalation: {stable_for: ~}}\n",  # was: invalid duration None
            "~",
            "kpis[0].escalation.stable_for",
            "invalid duration null: expected text such as 30s, 5m, 7d",
        ),
        (
            A_PUSH_KPI + ", every: .nan}\n",  # was: add a unit, e.g. nans
            ".nan",
            "kpis[0].every",
            "invalid duration .nan: expected text such as 30s, 5m, 7d",
        ),
        (
            A_PUSH_KPI + ", every: " + "9" * 5000 + "}\n",  # was: 5,000 digits and sys.set_...
            "9999",
            "",
            "cannot read '" + "9" * 56 + "... as !!int: a whole number of more than 4,300 digits",
        ),
        (
            "sources: {s: {type: [2000-01-01], url: x}}\n",  # was: '[datetime.date(2000, 1, 1)]'
            "[2000",
            "sources.s.type",
            "a list is not one of sql, http, prometheus, csv",
        ),
        ("kpis: !!int\n", "!!int", "", "cannot read '' as !!int"),  # IndexError
        ("kpis: !!bool x\n", "!!bool", "", "cannot read 'x' as !!bool"),  # KeyError
        (
            "kpis: !!timestamp x\n",
            "!!timestamp",
            "",
            "cannot read 'x' as !!timestamp",
        ),
        (  # root mapping, 63 lists: the first "{" is one level too deep
            "kpis: " + "[" * 63 + "{" * 40,
            "{",
            "",
            "document is nested more than 64 levels deep",
        ),
    ],
)
def test_what_fuzzing_found_is_refused_in_plain_words(
    text: str, at: str, path: str, message: str
) -> None:
    with pytest.raises(RuleLoadError) as caught:
        load_rule_text(text, FILE, env={})
    (problem,) = caught.value.problems
    lines = text.splitlines()
    line = next(i for i, t in enumerate(lines, start=1) if at in t)
    column = lines[line - 1].index(at) + 1
    assert (problem.line, problem.column, problem.path) == (line, column, path)
    assert problem.message == message


def test_a_byte_that_is_not_utf8_is_located(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_bytes(b"kpis:\n  - \xff\n")
    with pytest.raises(RuleLoadError) as caught:
        load_rules(tmp_path, env={})
    (problem,) = caught.value.problems
    assert isinstance(problem, RuleProblem)
    assert (problem.line, problem.column) == (2, 5)
