"""Governance lints of ``kpiwatch check --strict``."""

from __future__ import annotations

from pathlib import Path

from kpiwatch.config.lint import lint
from kpiwatch.config.loader import load_rule_text, load_rules

FULL = Path(__file__).parents[2] / "testdata" / "rules" / "full"

TEAMS = """\
teams:
  cs:
    slack: "#cs"
    email: [cs-leads@example.com]
kpis:
"""


def kpi(kpi_id: str, *extra: str, owner: str = "dana@example.com") -> str:
    lines = [
        f"  - id: {kpi_id}",
        f"    name: {kpi_id}",
        f"    owner: {owner!r}",
        "    direction: lower_is_better",
        "    source: push",
        "    team: cs",
        *(f"    {line}" for line in extra),
    ]
    return "\n".join(lines) + "\n"


GOOD = "thresholds: {yellow: 4, red: 5}"


def lint_text(text: str) -> list[str]:
    return [str(p) for p in lint(load_rule_text(text, "r.yaml", env={}))]


def test_a_well_governed_kpi_has_no_problems() -> None:
    assert lint_text(TEAMS + kpi("a", GOOD)) == []


def test_owner_must_be_one_person() -> None:
    text = (
        TEAMS
        + kpi("a", GOOD, owner="#cs-kpis")
        + kpi("b", GOOD, owner="cs-leads@example.com")
        + kpi("c", GOOD, owner="dana@example.com, sam@example.com")
        + kpi("d", GOOD, owner="Dana")
    )
    assert lint_text(text) == [
        "r.yaml:6:5: kpis[0].owner: owner '#cs-kpis' is a Slack channel: "
        "name one accountable person (an email)",
        "r.yaml:13:5: kpis[1].owner: owner 'cs-leads@example.com' is the shared email list of "
        "team 'cs': name one accountable person",
        "r.yaml:20:5: kpis[2].owner: owner 'dana@example.com, sam@example.com' is not a single "
        "email address: name one accountable person",
        "r.yaml:27:5: kpis[3].owner: owner 'Dana' is not a single email address: "
        "name one accountable person",
    ]


def test_at_most_seven_kpis_per_team() -> None:
    seven = "".join(kpi(f"k{i}", GOOD) for i in range(7))
    assert lint_text(TEAMS + seven) == []
    assert lint_text(TEAMS + seven + kpi("k7", GOOD)) == [
        "r.yaml:2:3: teams.cs: team 'cs' has 8 KPIs, more than 7: k0, k1, k2, k3, k4, k5, k6, k7"
    ]


def test_lagging_kpi_needs_a_leading_one() -> None:
    lagging = kpi("churn", GOOD, "labels: {kind: lagging}")
    assert lint_text(TEAMS + lagging) == [
        "r.yaml:6:5: kpis[0].leading: lagging KPI 'churn' has no leading indicator: "
        "name the KPIs that predict it in leading: [...]"
    ]
    paired = kpi("churn", GOOD, "labels: {kind: lagging}", "leading: [trials]")
    leading = kpi("trials", GOOD, "labels: {kind: leading}")
    assert lint_text(TEAMS + paired + leading) == []


def test_kpi_needs_thresholds_or_target() -> None:
    message = (
        "has neither thresholds (yellow/red), a target nor a trend rule: "
        "it can never tell anyone it is off"
    )
    assert lint_text(TEAMS + kpi("a") + kpi("b", "thresholds: {}")) == [
        f"r.yaml:6:5: kpis[0]: KPI 'a' {message}",
        f"r.yaml:12:5: kpis[1]: KPI 'b' {message}",
    ]
    assert lint_text(TEAMS + kpi("a", "thresholds: {red: 5}")) == []
    assert lint_text(TEAMS + kpi("a", "target: {value: 3}")) == []
    seasonal = "trend: {seasonal: {season: 7d, max_pct: 20}}"
    assert lint_text(TEAMS + kpi("a", seasonal)) == []


def test_a_target_nothing_judges_is_reported() -> None:
    dated = "target: {value: 3, by: 2027-01-01}"
    assert lint_text(TEAMS + kpi("a", dated)) == []  # judged off track by default (SPEC §2a)
    off = kpi("a", dated, "trend: {off_track: false}")
    assert lint_text(TEAMS + off) == [
        "r.yaml:6:5: kpis[0].target: KPI 'a' has a target for 2027-01-01 that nothing "
        "judges: off_track is turned off"
    ]
    plan = kpi("m", "period: month", "target: {plan: {2026-11: 100}}", "thresholds: {red: 5}")
    assert lint_text(TEAMS + plan) == [
        "r.yaml:6:5: kpis[0].target: KPI 'm' has a plan that nothing judges: give "
        "thresholds in % of the plan, e.g. thresholds: {yellow: 95%, red: 90%}"
    ]


def test_indices_count_within_each_file(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(TEAMS + kpi("a", GOOD))
    (tmp_path / "b.yaml").write_text("kpis:\n" + kpi("b", GOOD, owner="#b"))
    problems = lint(load_rules(tmp_path, env={}))
    assert [(p.file, p.line, p.column, p.path) for p in problems] == [
        (str(tmp_path / "b.yaml"), 2, 5, "kpis[0].owner")
    ]


def test_full_example_is_clean() -> None:
    assert lint(load_rules(FULL, env={"BILLING_TOKEN": "t"})) == []
