"""Plain-text wording of events, shared by the log channel and the CLI."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from kpiwatch.config.rules import Kpi
from kpiwatch.evaluation.format import fmt_age, fmt_value
from kpiwatch.model import Event, EventKind

_EMOJI = {"green": "✅", "yellow": "⚠️", "red": "🔴", "unknown": "❔"}


def format_value(value: Any, unit: str) -> str:
    """A value with its unit, worded as in the reasons (``1,263,295 $``, ``6.21 %``)."""
    if value is None:
        return "no value"
    return fmt_value(float(value), unit)


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
        case EventKind.SOURCE_DOWN:
            return f"🚫 source {event.source} is failing: {data.get('error', '')}"
        case EventKind.SOURCE_RECOVERED:
            return f"✅ source {event.source} works again"
        case _:
            return f"{event.kind.value}: {name}"


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
