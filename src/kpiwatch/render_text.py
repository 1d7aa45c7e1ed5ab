"""Plain-text and JSON renderings for the CLI (`eval`, `status`, `history`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from kpiwatch.config.rules import Kpi
from kpiwatch.model import Evaluation, Event, KpiState, Observation, StatusChange
from kpiwatch.notify.text import format_value, target_text
from kpiwatch.overview import KpiOverview

_MARK = {"green": "●", "yellow": "▲", "red": "■", "unknown": "?"}


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "-"


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def evaluation_json(kpi: Kpi, evaluation: Evaluation, previous: KpiState | None) -> dict[str, Any]:
    return {
        "id": kpi.id,
        "name": kpi.name,
        "value": evaluation.value,
        "unit": kpi.unit,
        "observed_at": _iso(evaluation.observed_at),
        "raw_status": evaluation.raw_status.value,
        "status": evaluation.status.value,
        "previous_status": previous.status.value if previous else None,
        "reasons": list(evaluation.reasons),
        "findings": [
            {"rule": f.rule, "status": f.status.value, "reason": f.reason}
            for f in evaluation.findings
        ],
        "review": evaluation.state.review.value,
        "escalated": evaluation.state.escalated,
        "next_review": _iso(evaluation.state.next_review),
        "events": [e.kind.value for e in evaluation.events],
        "evaluated_at": _iso(evaluation.at),
    }


def evaluation_text(
    kpi: Kpi, evaluation: Evaluation, previous: KpiState | None, *, saved: bool = False
) -> str:
    lines = [
        f"{kpi.id}  {kpi.name}",
        f"  value     {format_value(evaluation.value, kpi.unit)}"
        + (f"  (observed {_when(evaluation.observed_at)})" if evaluation.observed_at else ""),
        f"  status    {evaluation.raw_status.value}"
        + (
            f"  (shown: {evaluation.status.value}, hysteresis for: {kpi.for_})"
            if evaluation.status is not evaluation.raw_status
            else ""
        )
        + (f"  (stored: {previous.status.value})" if previous else "  (never evaluated)"),
    ]
    target = target_text(kpi, evaluation.state.plan)
    if target is not None:
        lines.append(f"  target    {target}")
    lines.append(
        f"  review    {evaluation.state.review.value}"
        + (" (escalated)" if evaluation.state.escalated else "")
    )
    if evaluation.reasons:
        lines.append("  reasons")
        lines.extend(f"    - {reason}" for reason in evaluation.reasons)
    if not saved:
        lines.append("  (nothing was saved or sent)")
    return "\n".join(lines)


def status_table(rows: Sequence[KpiOverview]) -> str:
    header = ("", "KPI", "STATUS", "VALUE", "TARGET", "SINCE", "REVIEW", "NEXT REVIEW", "WHY")
    table = [header]
    for row in rows:
        review = row.review + (" ⏫" if row.escalated else "")
        why = row.reasons[0] if row.reasons else ""
        if row.ack:
            why = f"[ack {row.ack}] {why}"
        table.append(
            (
                _MARK[row.status.value],
                row.id,
                row.status.value,
                format_value(row.value, row.unit),
                format_value(row.target, row.unit) if row.target is not None else "-",
                _when(row.since),
                review,
                _when(row.next_review),
                why,
            )
        )
    widths = [max(len(str(r[i])) for r in table) for i in range(len(header) - 1)]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(r[:-1], widths, strict=False)) + "  " + r[-1]
        for r in table
    ]
    return "\n".join(line.rstrip() for line in lines)


def history_json(
    kpi: Kpi,
    observations: Sequence[Observation],
    changes: Sequence[StatusChange],
    events: Sequence[Event],
) -> dict[str, Any]:
    return {
        "id": kpi.id,
        "name": kpi.name,
        "unit": kpi.unit,
        "observations": [
            {"observed_at": _iso(o.observed_at), "value": o.value} for o in observations
        ],
        "status_changes": [
            {
                "at": _iso(c.at),
                "from": c.from_status.value if c.from_status else None,
                "to": c.to_status.value,
                "value": c.value,
                "reasons": list(c.reasons),
            }
            for c in changes
        ],
        "events": [
            {"at": _iso(e.at), "kind": e.kind.value, "key": e.key, "data": dict(e.data)}
            for e in events
        ],
    }


def history_text(
    kpi: Kpi,
    observations: Sequence[Observation],
    changes: Sequence[StatusChange],
    events: Sequence[Event],
) -> str:
    lines = [f"{kpi.id}  {kpi.name}", "", "status changes:"]
    lines += [
        f"  {_when(c.at)}  {c.from_status.value if c.from_status else '-':>7} → "
        f"{c.to_status.value:<7}  {format_value(c.value, kpi.unit):>12}  "
        f"{'; '.join(c.reasons)}"
        for c in changes
    ] or ["  none"]
    lines += ["", "events:"]
    lines += [f"  {_when(e.at)}  {e.kind.value}" for e in events] or ["  none"]
    lines += ["", f"latest {len(observations)} observations:"]
    lines += [
        f"  {_when(o.observed_at)}  {format_value(o.value, kpi.unit)}" for o in observations
    ] or ["  none"]
    return "\n".join(lines)
