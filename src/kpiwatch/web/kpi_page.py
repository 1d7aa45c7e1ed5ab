"""One page per KPI (``/kpis/{id}``): its chart, history, reasons, annotations, and
for a KPI judged per period (SPEC §2a) a bar per period: the plan as a tick across
each bar, the open period hatched, restated periods marked.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import partial
from typing import NamedTuple
from zoneinfo import ZoneInfo

from markupsafe import Markup

from kpiwatch.config.rules import Kpi, RuleSet
from kpiwatch.evaluation.judging import plan_for
from kpiwatch.evaluation.periods import (
    bucket,
    is_closed,
    period_label,
    period_start,
    plan_key,
    shift,
)
from kpiwatch.evaluation.target import day_start
from kpiwatch.model import EventKind, KpiState, Observation, Period, Status
from kpiwatch.notify.text import format_value, headline, planned, target_text, threshold_texts
from kpiwatch.overview import KpiOverview, overview
from kpiwatch.web.auth import reads_protected
from kpiwatch.web.context import WebContext
from kpiwatch.web.svg import COLOURS, MUTED, Bar, Glide, bars_svg, chart_svg
from kpiwatch.web.views import (
    WORDS,
    acks_of,
    ago,
    blindness,
    board_tz,
    judged_line,
    render,
    when,
)

CHART_POINTS = 365
# periods drawn as bars: two years of months on a wide screen, 13 (a year and the same
# month a year ago) on a phone, where 24 bars would be 12 px wide
BARS = 24
BARS_SMALL = 13
RESTATED_EVENTS = 500  # the newest restatements read to mark the bars (a few per period)
TABLE_ROWS = 50  # status changes, annotations, events on a KPI page (newest)


# ---------------------------------------------------------------- one KPI


def kpi_html(ctx: WebContext, kpi: Kpi) -> str:
    tz = board_tz(ctx)
    now = ctx.clock.now()
    state = ctx.store.get_state(kpi.id)
    states = {kpi.id: state} if state is not None else {}
    ack = acks_of(ctx, states).get(kpi.id)
    row = overview(RuleSet(kpis=(kpi,)), states, {kpi.id: ack} if ack else None)[0]
    problem = row.data_problem
    # the source's incident, read only when it is to be shown
    health = ctx.store.source_health() if problem is not None and problem.scope == "source" else {}
    blind = blindness(row, ctx.rules(), health, tz, now)
    verdict = row.verdict.value if blind is not None and row.verdict is not None else None
    if kpi.period is not None:
        charts = _bar_charts(ctx, kpi, kpi.period, state, row, tz, now)
    else:
        charts = _line_charts(ctx, kpi, row, tz)
    period, plan = judged_line(kpi, state, tz, short=False)
    changes = ctx.store.status_changes(kpi.id, limit=TABLE_ROWS)
    annotations = ctx.store.annotations(kpi.id, limit=TABLE_ROWS)
    events = ctx.store.events(kpi_id=kpi.id, limit=TABLE_ROWS)
    return render(
        "kpi.html.j2",
        title=kpi.name,
        logout=reads_protected(ctx.settings),
        kpi=kpi,
        row=row,
        status=row.status.value,
        word=WORDS[row.status],
        verdict=verdict,
        verdict_word=WORDS[Status(verdict)] if verdict is not None else None,
        blind=blind,
        colour=MUTED[verdict] if verdict is not None else COLOURS[row.status.value],
        value=format_value(row.value, kpi.unit) if row.value is not None else "no value",
        period=period,
        plan=plan,
        observed=when(row.observed_at, tz),
        # a plan per period is on the value line
        target=None if planned(kpi) else target_text(kpi, None),
        planned=planned(kpi),
        thresholds=list(threshold_texts(kpi, state.plan if state else None).items()),
        # the levels drawn: in the KPI's unit (thresholds in % of a plan are not)
        drawn=list(_drawn_levels(kpi, row).items()),
        since=when(row.since, tz),
        since_ago=ago(row.since, now),
        next_review=when(row.next_review, tz),
        last_evaluated=when(row.last_evaluated, tz),
        ack=ack,
        ack_at=when(ack.at, tz) if ack else None,
        chart=Markup(charts.wide),
        chart_small=Markup(charts.small),
        charts=charts,
        changes=[
            {
                "at": when(c.at, tz),
                "from": c.from_status.value if c.from_status else None,
                "to": c.to_status.value,
                "value": format_value(c.value, kpi.unit) if c.value is not None else "no value",
                "reasons": c.reasons,
            }
            for c in reversed(changes)
        ],
        annotations=[
            {"at": when(a.at, tz), "author": a.author, "text": a.text}
            for a in reversed(annotations)
        ],
        events=[{"at": when(e.at, tz), "text": headline(e, kpi)} for e in reversed(events)],
        related=_related(ctx, kpi),
    )


@dataclass(frozen=True)
class Related:
    """A KPI named on another's page: a leading indicator, a formula input, ..."""

    id: str
    name: str
    status: Status
    word: str


def _related(ctx: WebContext, kpi: Kpi) -> list[tuple[str, list[Related]]]:
    """The KPIs this one is read with: its leading indicators and the KPIs it leads,
    a formula's inputs and the formulas that read it; each with its status now."""
    from kpiwatch.config.crosscheck import formula_references

    rules = ctx.rules()

    def reads(formula: Kpi) -> frozenset[str]:
        try:
            return formula_references(formula.query or "")
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return frozenset()  # refused when the rules loaded; nothing to link

    formulas = [k for k in rules.kpis if k.source == "formula"]
    groups = [
        ("Leading indicators", list(kpi.leading)),
        ("Leading indicator of", [k.id for k in rules.kpis if kpi.id in k.leading]),
        ("Computed from", sorted(reads(kpi)) if kpi.source == "formula" else []),
        ("Used in formulas", [k.id for k in formulas if kpi.id in reads(k)]),
    ]
    shown = []
    for label, ids in groups:
        known = [rules.by_id[i] for i in ids if i in rules.by_id]
        if known:
            shown.append((label, [_related_one(ctx, other) for other in known]))
    return shown


def _related_one(ctx: WebContext, kpi: Kpi) -> Related:
    state = ctx.store.get_state(kpi.id)
    status = Status.UNKNOWN if state is None else state.status
    return Related(kpi.id, kpi.name, status, WORDS[status])


class Charts(NamedTuple):
    """A KPI page's history drawing, wide and narrow, and what its legend names."""

    wide: str
    small: str  # a phone's: its own width, so that its 11 px labels stay 11 px
    note: str  # what is drawn: "last 30 values", "last 13 months"
    plans: bool = False  # bars with a plan tick
    open: bool = False  # an open period, hatched
    restated: bool = False  # a restated period, marked


def _line_charts(ctx: WebContext, kpi: Kpi, row: KpiOverview, tz: ZoneInfo) -> Charts:
    """The history as a line against thresholds, target and glide path."""
    needs_first = (
        kpi.target is not None
        and kpi.target.by is not None
        and (kpi.target.baseline is None or kpi.target.baseline_date is None)
    )
    # The glide's default baseline is the very first observation, which may be older
    # than the points shown; read the whole history only when that is needed.
    if needs_first:
        everything = ctx.store.history(kpi.id)
        first, history = (everything[0] if everything else None), everything[-CHART_POINTS:]
    else:
        history = ctx.store.history(kpi.id, limit=CHART_POINTS)
        first = None
    drawn = partial(
        chart_svg,
        [(o.observed_at, o.value) for o in history],
        thresholds=_drawn_levels(kpi, row),
        target=kpi.target.value if kpi.target else None,
        glide=_glide(kpi, first, tz),
        unit=kpi.unit,
    )
    # SVG text scales with the drawing: a phone gets a drawing its own width, so that
    # its labels stay 11 px instead of shrinking to 5 (the stylesheet picks one)
    count = len(history)
    note = f"last {count} value{'s' if count != 1 else ''}"
    return Charts(drawn(), drawn(width=360, height=220), note)


def _drawn_levels(kpi: Kpi, row: KpiOverview) -> dict[str, float]:
    """The thresholds a chart draws as lines: those in the KPI's unit. Thresholds in % of
    the plan differ per period: the bars' plan ticks stand for them."""
    if kpi.thresholds is not None and kpi.thresholds.percent:
        return {}
    return row.thresholds


def _bar_charts(
    ctx: WebContext,
    kpi: Kpi,
    period: Period,
    state: KpiState | None,
    row: KpiOverview,
    tz: ZoneInfo,
    now: datetime,
) -> Charts:
    """The last :data:`BARS` periods as bars (the narrow drawing: the last :data:`BARS_SMALL`)."""
    since = shift(period_start(now, period, tz), period, tz, 1 - BARS)
    periods = bucket(ctx.store.history(kpi.id, since=since), period, tz, kpi.aggregate)
    periods = [p for p in periods if p.observed_at >= since][-BARS:]
    was = _restated(ctx, kpi, since)
    bars = [_bar(kpi, period, p, state, tz, now, was.get(p.observed_at)) for p in periods]
    drawn = partial(
        bars_svg,
        thresholds=_drawn_levels(kpi, row),
        target=kpi.target.value if kpi.target is not None and not planned(kpi) else None,
        period=period.value,
        unit=kpi.unit,
    )
    count = len(bars)
    return Charts(
        wide=drawn(bars),
        small=drawn(bars[-BARS_SMALL:], width=360, height=220),
        note=f"last {count} {period.value}{'s' if count != 1 else ''}",
        plans=any(b.plan is not None for b in bars),
        open=any(b.open for b in bars),
        restated=any(b.restated is not None for b in bars),
    )


def _bar(
    kpi: Kpi,
    period: Period,
    row: Observation,
    state: KpiState | None,
    tz: ZoneInfo,
    now: datetime,
    restated: float | None,
) -> Bar:
    start = row.observed_at
    plan = plan_for(kpi, start, tz, None)  # inline plans; a queried one only as judged:
    if plan is None and state is not None and state.observed_at == start:
        plan = state.plan
    return Bar(
        label=period_label(start, period, tz, short=True),
        name=period_label(start, period, tz),
        year=plan_key(start, period, tz)[:4],  # the ISO year of a week, as its label's W45
        value=row.value,
        plan=plan,
        open=not is_closed(start, period, tz, kpi.complete_after, now),
        restated=restated,
    )


def _restated(ctx: WebContext, kpi: Kpi, since: datetime) -> dict[datetime, float]:
    """Period start -> its value before the first restatement recorded, of the periods
    from ``since`` (restated events: late data for a closed period)."""
    events = ctx.store.events(kpi_id=kpi.id, kinds=[EventKind.RESTATED], limit=RESTATED_EVENTS)
    was: dict[datetime, float] = {}
    for event in events:  # oldest first: the first restatement's "old" is the first value
        start, old = event.data.get("period_start"), event.data.get("old")
        if not isinstance(start, str) or not isinstance(old, int | float):
            continue
        try:
            at = datetime.fromisoformat(start)
        except ValueError:
            continue
        if at.tzinfo is not None and at >= since:
            was.setdefault(at.astimezone(UTC), float(old))
    return was


def _glide(kpi: Kpi, first: Observation | None, tz: ZoneInfo) -> Glide | None:
    """Baseline at baseline_date -> target at ``by``, as the evaluation computes it
    (calendar dates are the start of that day in the configured timezone)."""
    target = kpi.target
    if target is None or target.by is None or target.value is None:
        return None
    base_value = target.baseline
    if base_value is None and first is not None:
        base_value = first.value
    if target.baseline_date is not None:
        base_at: datetime | None = _day(target.baseline_date, tz)
    else:
        base_at = first.observed_at if first is not None else None
    if base_value is None or base_at is None:
        return None
    return ((base_at, base_value), (_day(target.by, tz), target.value))


def _day(day: date, tz: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(day_start(day, tz), UTC)
