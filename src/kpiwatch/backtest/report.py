"""Backtest results for people (text) and programs (JSON, SPEC §3a)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from kpiwatch.backtest.outcome import KpiOutcome, Replayed, Transition, compare
from kpiwatch.evaluation.format import fmt_age
from kpiwatch.model import EventKind
from kpiwatch.notify.text import format_value, headline


def item_json(replayed: Replayed) -> str:
    """One KPI of the JSON document: its outcome, or with ``--compare``
    ``{"id", "a", "b", "diff"}``."""
    a, b = replayed.a, replayed.b
    if b is None:
        return json.dumps(a.as_json(), ensure_ascii=False)
    both = {"id": a.kpi.id, "a": a.as_json(), "b": b.as_json(), "diff": compare(a, b).as_json()}
    return json.dumps(both, ensure_ascii=False)


def json_document(items: Iterable[str], start: datetime, end: datetime) -> Iterator[str]:
    """``{"from": …, "to": …, "kpis": [...]}`` (SPEC §3a), written as the items come."""
    yield f'{{"from": {json.dumps(start.isoformat())}, "to": {json.dumps(end.isoformat())}, '
    yield '"kpis": ['
    for n, item in enumerate(items):
        yield (", " if n else "") + item
    yield "]}"


@dataclass
class Totals:
    """What the summary line needs of many replayed KPIs; parts add up with ``+=``."""

    kpis: int = 0
    evaluations: int = 0
    transitions: int = 0
    channels: Counter[str] = field(default_factory=Counter)  # notifications under the rules
    sent_a: int = 0
    sent_b: int = 0  # under the compared rules
    missing: list[str] = field(default_factory=list)  # KPIs the compared rules lack

    def add(self, replayed: Replayed) -> None:
        a = replayed.a
        self.kpis += 1
        self.evaluations += a.evaluations
        self.transitions += len(a.transitions)
        self.channels.update(notice.delivery.channel for notice in a.sent)
        self.sent_a += len(a.sent)
        self.sent_b += 0 if replayed.b is None else len(replayed.b.sent)

    def add_part(self, other: Totals) -> None:
        """Fold in another part's totals."""
        self.kpis += other.kpis
        self.evaluations += other.evaluations
        self.transitions += other.transitions
        self.channels.update(other.channels)
        self.sent_a += other.sent_a
        self.sent_b += other.sent_b
        self.missing.extend(other.missing)

    def text(self) -> str:
        per_channel = ", ".join(f"{c} {n}" for c, n in self.channels.most_common()) or "none"
        return (
            f"{self.kpis} KPI(s), {self.evaluations} evaluations, "
            f"{self.transitions} status changes; notifications: {per_channel}"
        )

    def compared_text(self) -> str:
        return (
            f"all KPIs: {self.sent_a} notifications under the current rules, "
            f"{self.sent_b} under the other"
        )


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


def pair_text(a: KpiOutcome, b: KpiOutcome, tz: ZoneInfo) -> str:
    """One KPI under other rules: counts, transitions and episodes added (+) and removed (-)."""
    diff = compare(a, b)
    head = (
        f"{a.kpi.id}: {len(a.transitions)} → {len(b.transitions)} status changes, "
        f"{len(a.sent)} → {len(b.sent)} notifications"
    )
    same = not (diff.transitions_added or diff.transitions_removed)
    lines = [head + (" (no difference)" if same and len(a.sent) == len(b.sent) else "")]
    for sign, transitions in (("-", diff.transitions_removed), ("+", diff.transitions_added)):
        for t in transitions:
            was = "first" if t.from_ is None else t.from_.value
            lines.append(f"  {sign} {_when(t.at, tz)}  {was} → {t.to.value}")
    if diff.episodes_added or diff.episodes_removed:
        lines.append(
            f"  episodes: {len(diff.episodes_added)} added, {len(diff.episodes_removed)} removed"
        )
    return "\n".join(lines)
