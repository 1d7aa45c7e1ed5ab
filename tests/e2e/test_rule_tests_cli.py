"""`kpiwatch test` as a user runs it: the shipped examples, failures, malformed files."""

from __future__ import annotations

import textwrap
from pathlib import Path

from helpers import kpiwatch

REPO = Path(__file__).resolve().parents[2]

RULES = """
sources:
  wh: {type: sql, url: "sqlite:////nonexistent/warehouse.db"}
teams:
  cs: {slack: "#cs-kpis"}
kpis:
  - id: churn_rate
    name: Churn
    owner: dana@example.com
    team: cs
    unit: "%"
    direction: lower_is_better
    source: wh
    query: SELECT 1
    thresholds: {yellow: 4.5, red: 5.5}
    for: 2
"""


def _write(tmp_path: Path, test: str) -> Path:
    (tmp_path / "rules").mkdir(exist_ok=True)
    (tmp_path / "rules" / "churn.yaml").write_text(RULES)
    path = tmp_path / "rules" / "churn.test.yaml"
    path.write_text(textwrap.dedent(test))
    return path


def test_the_shipped_rule_tests_pass() -> None:
    files = sorted(str(p) for p in (REPO / "rules" / "tests").glob("*.test.yaml"))
    assert files
    result = kpiwatch(REPO, "test", *files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("0 failed")


def test_passing_cases(tmp_path: Path) -> None:
    path = _write(tmp_path, """\
        rule_files: [churn.yaml]
        cases:
          - name: red takes two agreeing evaluations
            kpi: churn_rate
            series: {start: 2026-01-01, step: 1d, values: "4 5.8+0.1x2"}
            expect:
              - {step: 2, status: green}
              - {step: 3, status: red, reason_contains: "> red 5.5",
                 events: [status_changed, escalated],
                 notifications: ["slack:#cs-kpis", "email:dana@example.com"]}
              - {step: 4, status: red, events: [], notifications: []}
        """)  # fmt: skip
    result = kpiwatch(tmp_path, "test", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == "3 passed, 0 failed\n"
    assert f"{path}: ok: 1 case(s), 3 check(s)" in result.stderr


def test_a_failing_case_says_what_was_expected_and_what_came(tmp_path: Path) -> None:
    path = _write(tmp_path, """\
        rule_files: [churn.yaml]
        cases:
          - name: red after two bad days
            kpi: churn_rate
            series: {start: 2026-01-01, step: 1d, values: "4 4.2 4.8 5.8 5.8"}
            expect:
              - {step: 4, status: red}
              - {step: 5, status: red, notifications: ["slack:#other"]}
        """)  # fmt: skip
    result = kpiwatch(tmp_path, "test", str(path))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f'{path}: case "red after two bad days": step 4: expected red, got green '
        "(value 5.8 % > red 5.5 %)",
        f'{path}: case "red after two bad days": step 5: expected notifications '
        "[slack:#other], got [slack:#cs-kpis, email:dana@example.com]",
        "0 passed, 2 failed",
    ]


def test_a_malformed_test_file_exits_2_with_file_line_column(tmp_path: Path) -> None:
    path = _write(tmp_path, """\
        rule_files: [churn.yaml]
        cases:
          - name: typo
            kpi: churn_rat
            series: {start: 2026-01-01, step: 1d, values: "4 4.2 five"}
            expect:
              - {step: 9, status: purple}
          - name: no steps
            kpi: churn_rate
            series: {start: 2026-01-01, step: 1d, values: "4"}
            expect:
              - {step: 3, stauts: red}
        """)  # fmt: skip
    result = kpiwatch(tmp_path, "test", str(path))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert any(
        line.startswith(f"{path}:7:27: cases[0].expect[0].status: ") and "'purple'" in line
        for line in lines
    ), lines
    assert any(
        line.startswith(f"{path}:12:19: cases[1].expect[0].stauts: unknown key")
        for line in lines
    ), lines
    assert lines[-1] == "2 problem(s) in the test files; no test was run"


def test_unknown_kpis_bad_series_and_steps_past_the_end_are_located(tmp_path: Path) -> None:
    path = _write(tmp_path, """\
        rule_files: [churn.yaml]
        cases:
          - name: typo
            kpi: churn_rat
            series: {start: 2026-01-01, step: 1d, values: "4"}
            expect: [{step: 1, status: green}]
          - name: bad series
            kpi: churn_rate
            series: {start: 2026-01-01, step: 1d, values: "4 4.2 five"}
            expect: [{step: 1, status: green}]
          - name: too far
            kpi: churn_rate
            series: {start: 2026-01-01, step: 1d, values: "4 _"}
            expect: [{step: 3, status: green}]
        """)  # fmt: skip
    result = kpiwatch(tmp_path, "test", str(path))
    assert result.returncode == 2
    assert result.stderr.splitlines()[:3] == [
        f"{path}:4:10: cases[0].kpi: no KPI 'churn_rat' in the rule files; "
        "did you mean 'churn_rate'?",
        f"{path}:9:51: cases[1].series.values: item 3 'five' is not a number, "
        "a+bxN, a-bxN, _ or _xN",
        f"{path}:14:21: cases[2].expect[0].step: the series has 2 steps",
    ]


def test_broken_rule_files_are_reported_as_rule_errors(tmp_path: Path) -> None:
    path = _write(tmp_path, """\
        rule_files: [missing.yaml]
        cases:
          - name: x
            kpi: churn_rate
            series: {start: 2026-01-01, step: 1d, values: "4"}
            expect: [{step: 1, status: green}]
        """)  # fmt: skip
    result = kpiwatch(tmp_path, "test", str(path))
    assert result.returncode == 2
    assert "missing.yaml" in result.stderr
    assert "cannot read" in result.stderr


def test_rule_test_files_beside_the_rules_are_not_loaded_as_rules(tmp_path: Path) -> None:
    _write(tmp_path, "rule_files: [churn.yaml]\ncases: []\n")
    result = kpiwatch(tmp_path, "--rules-dir", str(tmp_path / "rules"), "check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 file(s)" in result.stdout
