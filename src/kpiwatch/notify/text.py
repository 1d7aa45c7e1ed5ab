"""Plain-text wording of events, shared by the log channel and the CLI."""

from __future__ import annotations

from typing import Any

from kpiwatch.config.rules import Kpi
from kpiwatch.evaluation.format import fmt_value
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
        case EventKind.SOURCE_DOWN:
            return f"🚫 source {event.source} is failing: {data.get('error', '')}"
        case EventKind.SOURCE_RECOVERED:
            return f"✅ source {event.source} works again"
        case _:
            return f"{event.kind.value}: {name}"
