"""Backtest results for people (text) and programs (JSON, SPEC §3a)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from kpiwatch.backtest.outcome import KpiOutcome, Transition, compare
from kpiwatch.backtest.run import Replayed
from kpiwatch.evaluation.format import fmt_age
from kpiwatch.model import EventKind
from kpiwatch.notify.text import format_value, headline


def json_chunks(
    replays: Iterable[Replayed], start: datetime | None, end: datetime
) -> Iterator[str]:
    """The JSON document of SPEC §3a, a KPI at a time (a year of 10,000 KPIs is large):
    ``{"kpis": [...], "from": …, "to": …}``; ``from`` is the earliest moment replayed.
    With ``--compare`` each KPI is ``{"id", "a", "b", "diff"}``."""
    first = start
    yield '{"kpis": ['
    for n, replayed in enumerate(replays):
        a, b = replayed.a, replayed.b
        first = a.start if first is None else min(first, a.start)
        item = a.as_json() if b is None else {
            "id": a.kpi.id, "a": a.as_json(), "b": b.as_json(), "diff": compare(a, b).as_json()
        }  # fmt: skip
        yield (", " if n else "") + json.dumps(item, ensure_ascii=False)
    shown = (first or end).isoformat()
    yield f'], "from": {json.dumps(shown)}, "to": {json.dumps(end.isoformat())}}}'


def _when(moment: datetime, tz: ZoneInfo) -> str:
    return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M")


def _span(seconds: float) -> str:
    return fmt_age(timedelta(seconds=seconds))


def _transition(t: Transition, unit: str, tz: ZoneInfo) -> str:
    was = "first" if t.from_ is None else t.from_.value
    reasons = "; ".join(t.reasons)
    return f"  {_when(t.at, tz)}  {was} → {t.to.value}  {format_value(t.value, unit)}  ({reasons})"


def outcome_text(outcome: KpiOutcome, tz: ZoneInfo) -> str:
    """One KPI: its transitions and escalations, reviews due, notifications per route."""
    kpi = outcome.kpi
    lines = [
        f"{kpi.id} ({kpi.name}): {outcome.evaluations} evaluations, "
        f"{_when(outcome.start, tz)} → {_when(outcome.end, tz)}"
    ]
    rows: list[tuple[datetime, str]] = [
        (t.at, _transition(t, kpi.unit, tz)) for t in outcome.transitions
    ]
    for event in outcome.events:
        if event.kind is EventKind.ESCALATED:
            rows.append(
                (
                    event.at,
                    f"  {_when(event.at, tz)}  escalated: "
                    f"{event.data.get('from_review')} → {event.data.get('review')} reviews",
                )
            )
        elif event.kind is EventKind.DE_ESCALATED:
            rows.append(
                (
                    event.at,
                    f"  {_when(event.at, tz)}  de-escalated: "
                    f"back to {event.data.get('review')} reviews",
                )
            )
    lines.extend(row for _, row in sorted(rows, key=lambda r: r[0]))
    if not outcome.transitions:
        lines.append(
            f"  no status change: {outcome.final.status.value if outcome.final else '-'} throughout"
        )
    reviews = Counter(
        str(e.data.get("cadence")) for e in outcome.events if e.kind is EventKind.REVIEW_DUE
    )
    if reviews:
        lines.append(
            "  reviews due: " + ", ".join(f"{n} {cadence}" for cadence, n in reviews.items())
        )
    sent = outcome.sent
    muted = len(outcome.notices) - len(sent)
    lines.append(
        f"  notifications: {len(sent)}" + (f" ({muted} held back by mute windows)" if muted else "")
    )
    first: dict[str, str] = {}
    counts: Counter[str] = Counter()
    for notice in sent:
        counts[notice.route] += 1
        first.setdefault(notice.route, headline(notice.event, kpi))
    for route, count in counts.most_common():
        lines.append(f"    {route}: {count}, first: {first[route]}")
    summary = outcome.summary()
    episodes = ", ".join(f"{status} {n}" for status, n in summary["episodes"].items())
    spent = ", ".join(f"{status} {_span(s)}" for status, s in summary["seconds_in"].items())
    lines.append(f"  episodes: {episodes}; time in {spent}")
    if outcome.final is not None:
        final = outcome.final
        escalated = " (escalated)" if final.escalated else ""
        lines.append(
            f"  ends {final.status.value} since {_when(final.since, tz)}, "
            f"{final.review.value} reviews{escalated}"
        )
    return "\n".join(lines)


def totals_text(outcomes: Sequence[KpiOutcome]) -> str:
    """The whole run: KPIs, transitions, notifications per channel."""
    channels: Counter[str] = Counter()
    for outcome in outcomes:
        channels.update(notice.delivery.channel for notice in outcome.sent)
    per_channel = ", ".join(f"{c} {n}" for c, n in channels.most_common()) or "none"
    transitions = sum(len(o.transitions) for o in outcomes)
    return (
        f"{len(outcomes)} KPI(s), {sum(o.evaluations for o in outcomes)} evaluations, "
        f"{transitions} status changes; notifications: {per_channel}"
    )


def compared_text(pairs: Sequence[tuple[KpiOutcome, KpiOutcome]], tz: ZoneInfo) -> str:
    """Per KPI, what the other rules change: counts, transitions and episodes added/removed."""
    lines = []
    for a, b in pairs:
        diff = compare(a, b)
        head = (
            f"{a.kpi.id}: {len(a.transitions)} → {len(b.transitions)} status changes, "
            f"{len(a.sent)} → {len(b.sent)} notifications"
        )
        same = not (diff.transitions_added or diff.transitions_removed)
        lines.append(head + (" (no difference)" if same and len(a.sent) == len(b.sent) else ""))
        for sign, transitions in (("-", diff.transitions_removed), ("+", diff.transitions_added)):
            for t in transitions:
                was = "first" if t.from_ is None else t.from_.value
                lines.append(f"  {sign} {_when(t.at, tz)}  {was} → {t.to.value}")
        if diff.episodes_added or diff.episodes_removed:
            lines.append(
                f"  episodes: {len(diff.episodes_added)} added, "
                f"{len(diff.episodes_removed)} removed"
            )
    total_a = sum(len(a.sent) for a, _ in pairs)
    total_b = sum(len(b.sent) for _, b in pairs)
    lines.append(
        f"all KPIs: {total_a} notifications under the current rules, {total_b} under the other"
    )
    return "\n".join(lines)
