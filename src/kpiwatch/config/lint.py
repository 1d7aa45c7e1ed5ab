"""Governance lints of ``kpiwatch check --strict``: rules that load but are poorly owned.

Each problem is located at the KPI (or team) it concerns, with the path of the key.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from kpiwatch.config.loader import LoadedRules
from kpiwatch.config.rules import Kpi
from kpiwatch.errors import RuleProblem

MAX_KPIS_PER_TEAM = 7  # more than a team can review and act on
_SINGLE_EMAIL = re.compile(r"[^@\s,;]+@[^@\s,;]+")


def lint(loaded: LoadedRules) -> list[RuleProblem]:
    """Every governance problem in loaded rules, in file and line order."""
    problems = [*_kpi_problems(loaded), *_team_sizes(loaded)]
    return sorted(problems, key=lambda p: (p.file, p.line, p.column))


def _kpi_problems(loaded: LoadedRules) -> Iterator[RuleProblem]:
    shared = _shared_lists(loaded)
    index_in_file: dict[str, int] = {}  # kpis keep file order, so this is kpis[i] of the file
    for kpi in loaded.rules.kpis:
        file, line, column = loaded.locations.get(kpi.id, ("<unknown>", 1, 1))
        index = index_in_file.get(file, 0)
        index_in_file[file] = index + 1
        for key, message in _kpi_messages(kpi, shared):
            path = f"kpis[{index}].{key}" if key else f"kpis[{index}]"
            yield RuleProblem(file, line, column, path, message)


def _kpi_messages(kpi: Kpi, shared: dict[str, str]) -> Iterator[tuple[str, str]]:
    """(key, message) for each lint a KPI fails; an empty key means the whole KPI."""
    owner = _owner_problem(kpi.owner, shared)
    if owner:
        yield "owner", owner
    if kpi.labels.get("kind") == "lagging" and not kpi.leading:
        yield (
            "leading",
            (
                f"lagging KPI {kpi.id!r} has no leading indicator: "
                "name the KPIs that predict it in leading: [...]"
            ),
        )
    thresholds = kpi.thresholds
    has_thresholds = thresholds is not None and (
        thresholds.yellow is not None or thresholds.red is not None
    )
    trend = kpi.trend
    has_trend = trend is not None and (
        trend.worsening_streak is not None or trend.change is not None
        or trend.seasonal is not None
    )  # fmt: skip
    if not has_thresholds and kpi.target is None and not has_trend:
        yield (
            "",
            (
                f"KPI {kpi.id!r} has neither thresholds (yellow/red), a target nor a trend "
                "rule: it can never tell anyone it is off"
            ),
        )
    unjudged = _unjudged_target(kpi)
    if unjudged:
        yield "target", unjudged


def _unjudged_target(kpi: Kpi) -> str | None:
    """Why no rule judges the KPI's target (SPEC §2a), or None when one does."""
    target = kpi.target
    if target is None or kpi.off_track_severity is not None:
        return None
    planned = target.plan is not None or target.plan_query is not None
    if planned and kpi.thresholds is not None and kpi.thresholds.percent:
        return None
    if planned:
        return (
            f"KPI {kpi.id!r} has a plan that nothing judges: give thresholds in % of the "
            "plan, e.g. thresholds: {yellow: 95%, red: 90%}"
        )
    if target.by is not None:
        return (
            f"KPI {kpi.id!r} has a target for {target.by} that nothing judges: "
            "off_track is turned off"
        )
    return None  # a value alone is shown and exported: that is what it is for (SPEC §2)


def _owner_problem(owner: str, shared: dict[str, str]) -> str | None:
    """Why ``owner`` is not one accountable person, or None when it is."""
    owner = owner.strip()
    if owner.startswith("#"):
        return f"owner {owner!r} is a Slack channel: name one accountable person (an email)"
    if not _SINGLE_EMAIL.fullmatch(owner):
        return f"owner {owner!r} is not a single email address: name one accountable person"
    team = shared.get(owner.lower())
    if team is not None:
        return (
            f"owner {owner!r} is the shared email list of team {team!r}: "
            "name one accountable person"
        )
    return None


def _shared_lists(loaded: LoadedRules) -> dict[str, str]:
    """Each team's email address (lower case) -> the team's name."""
    return {
        address.strip().lower(): name
        for name, team in loaded.rules.teams.items()
        for address in team.email
    }


def _team_sizes(loaded: LoadedRules) -> Iterator[RuleProblem]:
    members: dict[str, list[str]] = {}
    for kpi in loaded.rules.kpis:
        if kpi.team is not None:
            members.setdefault(kpi.team, []).append(kpi.id)
    for team, ids in members.items():
        if len(ids) <= MAX_KPIS_PER_TEAM:
            continue
        fallback = loaded.locations.get(ids[0], ("<unknown>", 1, 1))
        file, line, column = loaded.team_locations.get(team, fallback)
        yield RuleProblem(
            file,
            line,
            column,
            f"teams.{team}",
            f"team {team!r} has {len(ids)} KPIs, more than {MAX_KPIS_PER_TEAM}: {', '.join(ids)}",
        )
