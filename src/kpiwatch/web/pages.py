"""The status board (``/``) and one page per KPI (``/kpis/{id}``): server-rendered HTML.

A blind KPI (SPEC §5a: unknown because its value cannot be had) shows its last
verdict greyed, since when no fresh data came and why, and who has been told:
for a problem of its source the source's data owner (else on-call) and since when
the source's incident is open; for a problem of its own query its owner.

Everything a page needs is inline (CSS and SVG): no scripts, fonts or images
from anywhere, so the board works on a closed network and needs no CSP
exceptions. Templates autoescape every value; only the SVG from
:mod:`kpiwatch.web.svg` (numbers and escaped text) is marked safe.

A KPI judged per period (SPEC §2a) shows the judged period with its value and
plan (``Nov: 4.1 % (plan 4.0 %)``), thresholds in % of the plan as such (never
as bare numbers in the KPI's unit), and on its page a bar per period: the plan
as a tick across each bar, the open period hatched, restated periods marked.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cache, partial
from typing import TYPE_CHECKING, Any, NamedTuple
from zoneinfo import ZoneInfo

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
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
from kpiwatch.model import Ack, DataProblem, EventKind, KpiState, Observation, Period, Status
from kpiwatch.notify.text import format_value, headline, planned, target_text, threshold_texts
from kpiwatch.overview import KpiOverview, overview
from kpiwatch.web.auth import reads_protected
from kpiwatch.web.context import WebContext
from kpiwatch.web.svg import COLOURS, MUTED, Bar, Glide, bars_svg, chart_svg, sparkline_svg

if TYPE_CHECKING:
    import jinja2

UNASSIGNED = "Unassigned"
# source -> (up, since, last error): Store.source_health(); up is False during an incident
Health = Mapping[str, tuple[bool, datetime, str | None]]
SPARK_POINTS = 30  # a month of daily values: enough to see a trend at a glance
CHART_POINTS = 365
# periods drawn as bars: two years of months on a wide screen, 13 (a year and the same
# month a year ago) on a phone, where 24 bars would be 12 px wide
BARS = 24
BARS_SMALL = 13
RESTATED_EVENTS = 500  # the newest restatements read to mark the bars (a few per period)
TABLE_ROWS = 50  # status changes, annotations, events on a KPI page (newest)
REFRESH_SECONDS = 60
# Worst first, so a glance down a team's list meets the problems before the fine ones.
_ORDER = {Status.RED: 0, Status.YELLOW: 1, Status.UNKNOWN: 2, Status.GREEN: 3}
_WORDS = {
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


# ---------------------------------------------------------------- view models


@dataclass(frozen=True)
class Blindness:
    """Why a blind KPI has no fresh verdict, and who has been told (SPEC §5a)."""

    since: str  # when the spell without usable data began
    since_ago: str
    reason: str
    told: str  # who knows, worded for people


@dataclass(frozen=True)
class Card:
    """One KPI as the board shows it."""

    id: str
    name: str
    status: str  # green | yellow | red | unknown
    word: str
    value: str
    target: str  # the line under the value: "target 150 by 2026-12-31", "no target", ...
    owner: str
    review: str
    escalated: bool
    since: str | None
    since_ago: str | None
    reason: str | None
    more_reasons: int
    ack: str | None
    error: str | None
    spark: Markup
    # set while blind with a verdict: the last green/yellow/red, shown greyed
    verdict: str | None = None
    blind: Blindness | None = None
    # a KPI judged per period: the judged period's short label, and its plan worded
    period: str | None = None
    plan: str | None = None

    @property
    def colour(self) -> str:
        return MUTED[self.verdict] if self.verdict is not None else COLOURS[self.status]

    @property
    def episode_word(self) -> str:
        """The word of the status whose episode ``since`` is: the verdict's while blind."""
        return _WORDS[Status(self.verdict)] if self.verdict is not None else self.word


@dataclass(frozen=True)
class Group:
    team: str
    cards: tuple[Card, ...]
    counts: dict[str, int]


@dataclass(frozen=True)
class SourceProblem:
    """A source with an open data incident, and who was told when it opened."""

    name: str
    since: str
    error: str | None
    owner: str


def pages_router(ctx: WebContext) -> APIRouter:
    """The HTML pages: ``GET /`` (the board) and ``GET /kpis/{kpi_id}``."""
    router = APIRouter()

    # Plain ``def`` handlers: the store is synchronous, so FastAPI runs them in its
    # thread pool instead of blocking the event loop.
    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    def board() -> HTMLResponse:
        return HTMLResponse(_board_html(ctx))

    @router.get("/kpis/{kpi_id}", response_class=HTMLResponse, include_in_schema=False)
    def kpi_page(kpi_id: str) -> HTMLResponse:
        rules = ctx.rules()
        kpi = rules.by_id.get(kpi_id)
        if kpi is None:
            close = difflib.get_close_matches(kpi_id, list(rules.by_id), n=3)
            names = [(k, rules.by_id[k].name) for k in close]
            html = render("not_found.html.j2", kpi_id=kpi_id, close=names, title="Not found")
            return HTMLResponse(html, status_code=404)
        return HTMLResponse(_kpi_html(ctx, kpi))

    return router


def render(template: str, /, **context: Any) -> str:
    return _env().get_template(template).render(**context)


def _tz(ctx: WebContext) -> ZoneInfo:
    try:
        return ZoneInfo(ctx.settings.timezone)
    except (KeyError, ValueError):  # settings validate it; a page must render regardless
        return ZoneInfo("UTC")


def _when(moment: datetime | None, tz: ZoneInfo) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z").strip()


def _ago(moment: datetime | None, now: datetime) -> str | None:
    """``3 days``, ``5 hours``: how long an episode has lasted, for people."""
    if moment is None:
        return None
    seconds = max((now - moment).total_seconds(), 0.0)
    for size, word in ((86_400, "day"), (3_600, "hour"), (60, "minute")):
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {word}{'s' if count != 1 else ''}"
    return "just now"


def _target_line(kpi: Kpi) -> str:
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


def _judged(
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


def _data_owner(rules: RuleSet, source: str) -> str:
    """Who hears about a source's incidents: its owner, else on-call (notify/routing.py)."""
    config = rules.sources.get(source)
    return (config.owner if config is not None else None) or "on-call"


def _blindness(
    row: KpiOverview, rules: RuleSet, health: Health, tz: ZoneInfo, now: datetime
) -> Blindness | None:
    """The blind note of a KPI shown with its last verdict greyed; None when it is not
    blind, or has no verdict yet (then it is plain unknown, with the reason)."""
    problem = row.data_problem
    if problem is None or row.status is not Status.UNKNOWN or row.verdict is None:
        return None
    return Blindness(
        since=_when(problem.since, tz) or "",
        since_ago=_ago(problem.since, now) or "",
        reason=problem.reason,
        told=_told(problem, rules, health, tz),
    )


def _told(problem: DataProblem, rules: RuleSet, health: Health, tz: ZoneInfo) -> str:
    """Who knows about a blind spell: the data owner for a problem of the source (told
    when its incident opened), the KPI's owner when they were told (told_at)."""
    told = []
    if problem.scope == "source":
        owner = _data_owner(rules, problem.source)
        up, since, _ = health.get(problem.source, (True, None, None))
        if not up:
            told.append(
                f"data owner {owner} told: {problem.source} data incident "
                f"open since {_when(since, tz)}"
            )
        else:  # the incident is over, or not opened (yet): nobody told of it
            told.append(f"a problem of source {problem.source}, data owner {owner}")
    if problem.told_at is not None:
        told.append(f"owner told {_when(problem.told_at, tz)}")
    elif problem.scope == "kpi":
        told.append("owner not told yet")
    return " · ".join(told)


def _acks(ctx: WebContext, states: Mapping[str, KpiState]) -> dict[str, Ack]:
    return {kpi_id: ack for kpi_id, state in states.items()
            if (ack := ctx.store.ack_for(kpi_id, state.since)) is not None}  # fmt: skip


# ---------------------------------------------------------------- the board


def _board_html(ctx: WebContext) -> str:
    rules = ctx.rules()
    tz = _tz(ctx)
    now = ctx.clock.now()
    states = ctx.store.states()
    health = ctx.store.source_health()
    rows = overview(rules, states, _acks(ctx, states))
    cards: dict[str, list[Card]] = {}
    for row in rows:
        kpi = rules.by_id[row.id]
        recent = ctx.store.history(row.id, limit=SPARK_POINTS)
        blind = _blindness(row, rules, health, tz, now)
        card = _card(row, kpi, recent, tz, now, blind, states.get(row.id))
        cards.setdefault(row.team or UNASSIGNED, []).append(card)
    groups = [
        Group(team, tuple(sorted(found, key=lambda c: _ORDER[Status(c.status)])), _count(found))
        for team, found in sorted(cards.items(), key=lambda item: _team_key(rules, item[0]))
    ]
    down = [
        SourceProblem(name, _when(since, tz) or "", error, _data_owner(rules, name))
        for name, (up, since, error) in sorted(health.items())
        if not up
    ]
    return render(
        "board.html.j2",
        title="KPI status board",
        logout=reads_protected(ctx.settings),
        groups=groups,
        counts=_count([c for found in cards.values() for c in found]),
        total=len(rows),
        sources_checked=len(health),
        down=down,
        updated=_when(now, tz),
    )


def _team_key(rules: RuleSet, team: str) -> tuple[int, int, str]:
    """Teams in the order the rules declare them, then the rest by name, Unassigned last."""
    declared = list(rules.teams)
    if team == UNASSIGNED:
        return (2, 0, team)
    if team in declared:
        return (0, declared.index(team), team)
    return (1, 0, team.casefold())


def _count(cards: Sequence[Card]) -> dict[str, int]:
    counts = {"red": 0, "yellow": 0, "unknown": 0, "green": 0}
    for card in cards:
        counts[card.status] += 1
    return counts


def _card(
    row: KpiOverview,
    kpi: Kpi,
    recent: Sequence[Observation],
    tz: ZoneInfo,
    now: datetime,
    blind: Blindness | None = None,
    state: KpiState | None = None,
) -> Card:
    value = format_value(row.value, row.unit) if row.value is not None else "no value"
    period, plan = _judged(kpi, state, tz, short=True)
    reason = row.reasons[0] if row.reasons else None
    if reason is not None and row.error is not None and row.error in reason:
        reason = None  # the data problem line says it already, in red
    verdict = row.verdict.value if blind is not None and row.verdict is not None else None
    if blind is not None and reason == blind.reason:
        reason = None  # the blind note says it
    colour = MUTED[verdict] if verdict is not None else COLOURS[row.status.value]
    return Card(
        id=row.id,
        name=row.name,
        status=row.status.value,
        word=_WORDS[row.status],
        value=value,
        target=_target_line(kpi),
        owner=row.owner,
        review=row.review,
        escalated=row.escalated,
        since=_when(row.since, tz),
        since_ago=_ago(row.since, now),
        reason=reason,
        more_reasons=max(len(row.reasons) - 1, 0),
        ack=row.ack,
        error=None if blind is not None else row.error,
        spark=Markup(sparkline_svg([o.value for o in recent], colour=colour)),
        verdict=verdict,
        blind=blind,
        period=period,
        plan=plan,
    )


# ---------------------------------------------------------------- one KPI


def _kpi_html(ctx: WebContext, kpi: Kpi) -> str:
    tz = _tz(ctx)
    now = ctx.clock.now()
    state = ctx.store.get_state(kpi.id)
    states = {kpi.id: state} if state is not None else {}
    ack = _acks(ctx, states).get(kpi.id)
    row = overview(RuleSet(kpis=(kpi,)), states, {kpi.id: ack} if ack else None)[0]
    problem = row.data_problem
    # the source's incident, read only when it is to be shown
    health = ctx.store.source_health() if problem is not None and problem.scope == "source" else {}
    blind = _blindness(row, ctx.rules(), health, tz, now)
    verdict = row.verdict.value if blind is not None and row.verdict is not None else None
    if kpi.period is not None:
        charts = _bar_charts(ctx, kpi, kpi.period, state, row, tz, now)
    else:
        charts = _line_charts(ctx, kpi, row, tz)
    period, plan = _judged(kpi, state, tz, short=False)
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
        word=_WORDS[row.status],
        verdict=verdict,
        verdict_word=_WORDS[Status(verdict)] if verdict is not None else None,
        blind=blind,
        colour=MUTED[verdict] if verdict is not None else COLOURS[row.status.value],
        value=format_value(row.value, kpi.unit) if row.value is not None else "no value",
        period=period,
        plan=plan,
        observed=_when(row.observed_at, tz),
        # a plan per period is on the value line
        target=None if planned(kpi) else target_text(kpi, None),
        planned=planned(kpi),
        thresholds=list(threshold_texts(kpi, state.plan if state else None).items()),
        # the levels drawn: in the KPI's unit (thresholds in % of a plan are not)
        drawn=list(_drawn_levels(kpi, row).items()),
        since=_when(row.since, tz),
        since_ago=_ago(row.since, now),
        next_review=_when(row.next_review, tz),
        last_evaluated=_when(row.last_evaluated, tz),
        ack=ack,
        ack_at=_when(ack.at, tz) if ack else None,
        chart=Markup(charts.wide),
        chart_small=Markup(charts.small),
        charts=charts,
        changes=[
            {
                "at": _when(c.at, tz),
                "from": c.from_status.value if c.from_status else None,
                "to": c.to_status.value,
                "value": format_value(c.value, kpi.unit) if c.value is not None else "no value",
                "reasons": c.reasons,
            }
            for c in reversed(changes)
        ],
        annotations=[
            {"at": _when(a.at, tz), "author": a.author, "text": a.text}
            for a in reversed(annotations)
        ],
        events=[{"at": _when(e.at, tz), "text": headline(e, kpi)} for e in reversed(events)],
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
    return Related(kpi.id, kpi.name, status, _WORDS[status])


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
