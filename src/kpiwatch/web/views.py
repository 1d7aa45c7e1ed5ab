"""What the HTML pages share: the templates, the wording of times and targets, and what
a blind KPI shows (SPEC §5a: its last verdict greyed, since when no fresh data came,
and who has been told).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from kpiwatch.config.rules import Kpi, RuleSet
from kpiwatch.evaluation.periods import (
    period_label,
)
from kpiwatch.model import Ack, DataProblem, KpiState, Status
from kpiwatch.notify.text import format_value, planned, target_text, threshold_texts
from kpiwatch.overview import KpiOverview
from kpiwatch.web.context import WebContext
from kpiwatch.web.svg import COLOURS

if TYPE_CHECKING:
    import jinja2

# source -> (up, since, last error): Store.source_health(); up is False during an incident
Health = Mapping[str, tuple[bool, datetime, str | None]]
REFRESH_SECONDS = 60
WORDS = {
    Status.RED: "Red",
    Status.YELLOW: "Yellow",
    Status.GREEN: "Green",
    Status.UNKNOWN: "Unknown",
}


@cache
def _env() -> jinja2.Environment:
    import jinja2  # on the first render: a daemon that renders none never loads it

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("kpiwatch.web", "templates"),
        autoescape=True,  # every template is HTML: names, reasons, comments are user text
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(colours=COLOURS, refresh=REFRESH_SECONDS)
    return env


@dataclass(frozen=True)
class Blindness:
    """Why a blind KPI has no fresh verdict, and who has been told (SPEC §5a)."""

    since: str  # when the spell without usable data began
    since_ago: str
    reason: str
    told: str  # who knows, worded for people


def render(template: str, /, **context: Any) -> str:
    return _env().get_template(template).render(**context)


def board_tz(ctx: WebContext) -> ZoneInfo:
    try:
        return ZoneInfo(ctx.settings.timezone)
    except (KeyError, ValueError):  # settings validate it; a page must render regardless
        return ZoneInfo("UTC")


def when(moment: datetime | None, tz: ZoneInfo) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z").strip()


def ago(moment: datetime | None, now: datetime) -> str | None:
    """``3 days``, ``5 hours``: how long an episode has lasted, for people."""
    if moment is None:
        return None
    seconds = max((now - moment).total_seconds(), 0.0)
    for size, word in ((86_400, "day"), (3_600, "hour"), (60, "minute")):
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {word}{'s' if count != 1 else ''}"
    return "just now"


def target_line(kpi: Kpi) -> str:
    """The line under a card's value: the target, or for a plan per period (whose value
    is on the value line) the thresholds, in % of the plan: ``yellow 95 % of plan``."""
    if planned(kpi):
        assert kpi.period is not None  # planned
        levels = threshold_texts(kpi, None)  # the plan is on the value line
        if not levels:
            return f"plan per {kpi.period.value}"
        return " · ".join(f"{name} {level}" for name, level in levels.items())
    text = target_text(kpi, None)
    return "no target" if text is None else f"target {text}"


def judged_line(
    kpi: Kpi, state: KpiState | None, tz: ZoneInfo, *, short: bool
) -> tuple[str | None, str | None]:
    """(the judged period's label, its plan worded: ``plan 4.0 %``) of a KPI judged per
    period with a value; (None, None) otherwise. ``no plan`` when a plan per period has
    no entry for it."""
    if kpi.period is None or state is None or state.observed_at is None or state.value is None:
        return None, None
    label = period_label(state.observed_at, kpi.period, tz, short=short)
    if state.plan is not None:
        return label, f"plan {format_value(state.plan, kpi.unit)}"
    return label, "no plan" if planned(kpi) else None


def data_owner(rules: RuleSet, source: str) -> str:
    """Who hears about a source's incidents: its owner, else on-call (notify/routing.py)."""
    config = rules.sources.get(source)
    return (config.owner if config is not None else None) or "on-call"


def blindness(
    row: KpiOverview, rules: RuleSet, health: Health, tz: ZoneInfo, now: datetime
) -> Blindness | None:
    """The blind note of a KPI shown with its last verdict greyed; None when it is not
    blind, or has no verdict yet (then it is plain unknown, with the reason)."""
    problem = row.data_problem
    if problem is None or row.status is not Status.UNKNOWN or row.verdict is None:
        return None
    return Blindness(
        since=when(problem.since, tz) or "",
        since_ago=ago(problem.since, now) or "",
        reason=problem.reason,
        told=_told(problem, rules, health, tz),
    )


def _told(problem: DataProblem, rules: RuleSet, health: Health, tz: ZoneInfo) -> str:
    """Who knows about a blind spell: the data owner for a problem of the source (told
    when its incident opened), the KPI's owner when they were told (told_at)."""
    told = []
    if problem.scope == "source":
        owner = data_owner(rules, problem.source)
        up, since, _ = health.get(problem.source, (True, None, None))
        if not up:
            told.append(
                f"data owner {owner} told: {problem.source} data incident "
                f"open since {when(since, tz)}"
            )
        else:  # the incident is over, or not opened (yet): nobody told of it
            told.append(f"a problem of source {problem.source}, data owner {owner}")
    if problem.told_at is not None:
        told.append(f"owner told {when(problem.told_at, tz)}")
    elif problem.scope == "kpi":
        told.append("owner not told yet")
    return " · ".join(told)


def acks_of(ctx: WebContext, states: Mapping[str, KpiState]) -> dict[str, Ack]:
    return {kpi_id: ack for kpi_id, state in states.items()
            if (ack := ctx.store.ack_for(kpi_id, state.since)) is not None}  # fmt: skip
