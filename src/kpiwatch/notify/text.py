"""Plain-text wording of events, shared by the log channel and the CLI."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from kpiwatch.config.rules import Kpi
from kpiwatch.evaluation.format import fmt_age, fmt_number, fmt_value
from kpiwatch.evaluation.judging import resolved_thresholds
from kpiwatch.model import Event, EventKind, Period

_EMOJI = {"green": "✅", "yellow": "⚠️", "red": "🔴", "unknown": "❔"}


def format_value(value: Any, unit: str) -> str:
    """A value with its unit, worded as in the reasons (``1,263,295 $``, ``6.21 %``)."""
    if value is None:
        return "no value"
    return fmt_value(float(value), unit)


_ADJECTIVES = {
    Period.DAY: "daily",
    Period.WEEK: "weekly",
    Period.MONTH: "monthly",
    Period.QUARTER: "quarterly",
}


def planned(kpi: Kpi) -> bool:
    """Whether the KPI's target is a plan per period (``plan`` or ``plan_query``)."""
    target = kpi.target
    return (
        kpi.period is not None
        and target is not None
        and (target.plan is not None or target.plan_query is not None)
    )


def target_text(kpi: Kpi, plan: float | None) -> str | None:
    """The target as people read it: ``150 by 2026-12-31``; for a plan per period the
    judged period's plan, ``33,000 $ (monthly plan)`` (``plan`` is ``KpiState.plan``),
    or ``no monthly plan for the month judged``. None without a target."""
    target = kpi.target
    if target is None:
        return None
    if planned(kpi):
        assert kpi.period is not None  # planned
        kind = f"{_ADJECTIVES[kpi.period]} plan"
        if plan is None:
            return f"no {kind} for the {kpi.period.value} judged"
        return f"{format_value(plan, kpi.unit)} ({kind})"
    text = format_value(target.value, kpi.unit)
    return f"{text} by {target.by.isoformat()}" if target.by else text


def threshold_texts(kpi: Kpi, plan: float | None) -> dict[str, str]:
    """``{"yellow": ..., "red": ...}`` (those set, yellow first), worded for people.

    As written in the KPI's unit (``1,500 $``), or, for thresholds in % of the plan,
    the percent and what it comes to against ``plan`` (the judged period's):
    ``95 % of plan (31,350 $)``, or ``95 % of plan`` while no plan is known. Never the
    bare percent, which would read as a level in the KPI's unit.
    """
    levels = kpi.thresholds
    if levels is None:
        return {}
    yellow, red = resolved_thresholds(levels, plan)
    worded = {}
    for name, written, level in (("yellow", levels.yellow, yellow), ("red", levels.red, red)):
        if written is None:
            continue
        if not levels.percent:
            worded[name] = format_value(written, kpi.unit)
            continue
        share = f"{fmt_number(written)} % of plan"
        worded[name] = share if level is None else f"{share} ({format_value(level, kpi.unit)})"
    return worded


def headline(event: Event, kpi: Kpi | None) -> str:
    """One line a person understands in a glance: what happened to which KPI."""
    name = kpi.name if kpi else (event.kpi_id or event.source or "kpiwatch")
    unit = kpi.unit if kpi else str(event.data.get("unit", ""))
    data = event.data
    match event.kind:
        case EventKind.STATUS_CHANGED:
            to = str(data.get("to", "unknown"))
            was = data.get("from")
            change = f"{was} → {to}" if was else f"is {to}"
            return f"{_EMOJI.get(to, '')} {name} {change}: {format_value(data.get('value'), unit)}"
        case EventKind.ESCALATED:
            return f"⏫ {name} escalated to {data.get('review', 'weekly')} reviews while red"
        case EventKind.DE_ESCALATED:
            return f"⏬ {name} stable again: back to {data.get('review', 'its own')} reviews"
        case EventKind.REVIEW_DUE:
            return f"📅 {name} is due for its {data.get('cadence', '')} review".replace("  ", " ")
        case EventKind.REMINDER:
            return reminder_line(event, name, unit)
        case EventKind.DATA_INCIDENT | EventKind.DATA_RECOVERED:
            return data_line(event, name)
        case EventKind.ACKNOWLEDGED:
            return f"🙋 {name} acknowledged by {data.get('author', '?')}: {data.get('text', '')}"
        case EventKind.ANNOTATED:
            return f"📝 {name}: {data.get('text', '')} ({data.get('author', '?')})"
        case EventKind.RESTATED:  # late data for a closed period (recorded, shown, not sent)
            old, new = format_value(data.get("old"), unit), format_value(data.get("new"), unit)
            return f"✏️ {name}: {data.get('period', '?')} restated, {old} → {new}"
        case _:
            return f"{event.kind.value}: {name}"


def data_line(event: Event, name: str) -> str:
    """A data problem in one line (SPEC §5a), worded for whoever it is sent to.

    * a source's incident: ``🚫 data incident on source warehouse: cannot connect: …;
      8 KPIs blind: churn_rate, mrr, …``
    * its end: ``✅ warehouse works again after 3d 2h (8 KPIs)``
    * a KPI's own query failing: ``❔ Churn has no data: <the error, verbatim>``
    * a KPI blind for long through its source: ``❔ Churn has had no fresh data since …``
    """
    data = event.data
    source = event.source or "?"
    # rows stored by 0.1 (source_down / source_recovered) carried only "error"
    reason = str(data.get("reason") or data.get("error") or "no reason given")
    count = data.get("count")
    kpis = f" ({count} KPI{'' if count == 1 else 's'})" if isinstance(count, int) else ""
    if event.kind is EventKind.DATA_RECOVERED:
        took = f" after {data['duration']}" if data.get("duration") else ""
        return f"✅ source {source} works again{took}{kpis}"
    if event.kpi_id is None:
        return f"🚫 data incident on source {source}: {reason}{_affected(data)}"
    if data.get("scope") == "kpi":
        return f"❔ {name} has no data: {reason}"
    since = data.get("problem_since")
    age = f" for {fmt_age(event.at - datetime.fromisoformat(since))}" if since else ""
    owner = data.get("data_owner") or "on-call"
    told = data.get("data_owner_told")
    when = f" at {datetime.fromisoformat(told):%Y-%m-%d %H:%M} UTC" if told else ""
    return (f"❔ {name} has had no fresh data{age}: source {source} is failing ({reason}); "
            f"{owner} was told{when}")  # fmt: skip


def _affected(data: Mapping[str, Any]) -> str:
    """``; 8 KPIs blind: churn_rate, mrr, … and 3 more``: every KPI the incident blinds."""
    count, listed = data.get("count"), [str(k) for k in data.get("kpis") or ()]
    if not isinstance(count, int) or count == 0:
        return ""
    more = f" and {count - len(listed)} more" if count > len(listed) else ""
    return f"; {count} KPI{'' if count == 1 else 's'} blind: {', '.join(listed)}{more}"


def reminder_line(event: Event, name: str, unit: str) -> str:
    """``⏰ Churn is still red (since 3d): 6.2 % — not acknowledged``."""
    data = event.data
    since = data.get("since")
    age = f" (since {fmt_age(event.at - datetime.fromisoformat(since))})" if since else ""
    value = format_value(data.get("value"), unit)
    return f"⏰ {name} is still {data.get('status', 'red')}{age}: {value} — not acknowledged"


def ack_hint(kpi_id: str) -> str:
    """The command that stops a KPI's reminders (the API's ack does the same)."""
    return f"kpiwatch ack {kpi_id} --comment '…'"
