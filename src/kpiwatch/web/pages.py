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

The board lists what needs attention first, a page at a time, filtered and
searched by plain links and a GET form (:mod:`kpiwatch.web.listing`): the order
and the summary come from a lean snapshot of every KPI's state; full states,
sparklines and acks are read only for the KPIs on the page.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import cache, partial
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup
from starlette.datastructures import QueryParams

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
from kpiwatch.overview import KpiOverview, overview, overview_of
from kpiwatch.web.auth import reads_protected
from kpiwatch.web.context import WebContext
from kpiwatch.web.listing import (
    BOARD_STATUSES,
    GROUP_KEYS,
    GROUP_TITLES,
    MAX_SEARCH,
    MAX_VALUE,
    MAX_VALUES,
    BoardPage,
    Filters,
    LazySnapshots,
    board_page,
    did_you_mean,
)
from kpiwatch.web.svg import COLOURS, MUTED, Bar, Glide, bars_svg, chart_svg, sparkline_svg

if TYPE_CHECKING:
    import jinja2

# source -> (up, since, last error): Store.source_health(); up is False during an incident
Health = Mapping[str, tuple[bool, datetime, str | None]]
SPARK_POINTS = 30  # a month of daily values: enough to see a trend at a glance
PAGE_SIZE = 50  # KPIs on a page of the board, unless ?size= says otherwise
MAX_PAGE_SIZE = 200
MAX_PAGE = 10**9  # beyond any board; keeps page * size a small number
CHART_POINTS = 365
# periods drawn as bars: two years of months on a wide screen, 13 (a year and the same
# month a year ago) on a phone, where 24 bars would be 12 px wide
BARS = 24
BARS_SMALL = 13
RESTATED_EVENTS = 500  # the newest restatements read to mark the bars (a few per period)
TABLE_ROWS = 50  # status changes, annotations, events on a KPI page (newest)
REFRESH_SECONDS = 60
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
    team: str | None
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
class Section:
    """The cards of one group on a page of the board (listing.GROUP_TITLES)."""

    key: str  # red, yellow, blind, unknown, escalated, overdue, green
    title: str
    total: int  # the group's KPIs that pass the filters, on every page
    colour: str  # the status colour of its dot
    cards: list[Card] = field(default_factory=list)


@dataclass(frozen=True)
class BoardQuery:
    """A board request's parameters, bounded; what was refused is in ``notices``."""

    filters: Filters
    page: int
    size: int
    notices: tuple[str, ...]

    def href(self, page: int = 1) -> str:
        """A link to a page of the board with these filters (and size)."""
        items = self.filters.query()
        if self.size != PAGE_SIZE:
            items.append(("size", str(self.size)))
        if page != 1:
            items.append(("page", str(page)))
        return "?" + urlencode(items) if items else "/"

    def only(self, **filters: Any) -> str:
        """A link to the first page of the board filtered by these alone."""
        return BoardQuery(Filters(**filters), 1, self.size, ()).href()


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
    snapshots = LazySnapshots(ctx.store)

    # Plain ``def`` handlers: the store is synchronous, so FastAPI runs them in its
    # thread pool instead of blocking the event loop.
    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    def board(request: Request) -> HTMLResponse:
        query = board_query(request.query_params, ctx.rules())
        return HTMLResponse(_board_html(ctx, snapshots, query))

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


def board_query(params: QueryParams, rules: RuleSet) -> BoardQuery:
    """The board's filters, page and size from a request's query, bounded: a value out
    of bounds is cut or ignored and said so in a notice, never an error."""
    notices: list[str] = []

    def values(name: str) -> list[str]:
        given = [v.strip() for v in params.getlist(name) if v.strip()]
        if len(given) > MAX_VALUES:
            notices.append(f"only the first {MAX_VALUES} {name} filters are used")
            given = given[:MAX_VALUES]
        kept = []
        for value in given:
            if len(value) > MAX_VALUE:
                notices.append(f"a {name} over {MAX_VALUE} characters is ignored")
            elif value not in kept:
                kept.append(value)
        return kept

    statuses = []
    for value in values("status"):
        if value.lower() in BOARD_STATUSES:
            statuses.append(value.lower())
        else:
            notices.append(f"status {value!r} is ignored: it is one of {', '.join(BOARD_STATUSES)}")
    teams = values("team")
    notices += [
        f"no team {team!r} in the rules{did_you_mean(team, rules.teams)}"
        for team in teams
        if team not in rules.teams
    ]
    q = " ".join(params.get("q", "").split())
    if len(q) > MAX_SEARCH:
        notices.append(f"the search is cut to its first {MAX_SEARCH} characters")
        q = q[:MAX_SEARCH]
    filters = Filters(
        statuses=tuple(dict.fromkeys(statuses)), teams=tuple(teams),
        owners=tuple(values("owner")), labels=tuple(values("label")), q=q,
    )  # fmt: skip
    page = _whole(params.get("page"), "page", 1, MAX_PAGE, notices)
    size = _whole(params.get("size"), "size", PAGE_SIZE, MAX_PAGE_SIZE, notices)
    return BoardQuery(filters, page, size, tuple(notices))


def _whole(text: str | None, name: str, default: int, top: int, notices: list[str]) -> int:
    """A whole number from 1 to ``top`` (cut to it, with a notice), else ``default``."""
    if text is None or not text.strip():
        return default
    text = text.strip()
    try:
        # a long run of digits is a large number, not one to convert
        number = int(text) if len(text) <= 20 else (top + 1 if text.isdecimal() else None)
    except ValueError:
        number = None
    if number is None or number < 1:
        notices.append(f"{name} {text[:20]!r} is ignored: not a whole number from 1")
        return default
    if number > top:
        if name != "page":  # a page past the last shows the last
            notices.append(f"{name} is at most {top}")
        return top
    return number


_GROUP_COLOURS = ("red", "yellow", "unknown", "unknown", "green", "green", "green")


def _board_html(ctx: WebContext, snapshots: LazySnapshots, query: BoardQuery) -> str:
    rules = ctx.rules()
    tz = _tz(ctx)
    now = ctx.clock.now()
    listing = board_page(
        rules, snapshots.read(), now, query.filters, page=query.page, size=query.size
    )
    # only the KPIs on the page, in a few queries whatever their number
    kpis = [kpi for _, kpi in listing.kpis]
    read = ctx.store.notice_context(
        [kpi.id for kpi in kpis], points=SPARK_POINTS, annotations_since=None
    )
    states = {kpi_id: c.state for kpi_id, c in read.items() if c.state is not None}
    acks = {kpi_id: c.ack for kpi_id, c in read.items() if c.ack is not None}
    health = ctx.store.source_health()
    sections: list[Section] = []
    for (group, kpi), row in zip(listing.kpis, overview_of(kpis, states, acks), strict=True):
        if not sections or sections[-1].key != GROUP_KEYS[group]:
            colour = COLOURS[_GROUP_COLOURS[group]]
            total = listing.group_totals[group]
            sections.append(Section(GROUP_KEYS[group], GROUP_TITLES[group], total, colour))
        blind = _blindness(row, rules, health, tz, now)
        recent = read[kpi.id].recent
        sections[-1].cards.append(_card(row, kpi, recent, tz, now, blind, states.get(kpi.id)))
    down = [
        SourceProblem(name, _when(since, tz) or "", error, _data_owner(rules, name))
        for name, (up, since, error) in sorted(health.items())
        if not up
    ]
    filters = query.filters
    return render(
        "board.html.j2",
        title="KPI status board",
        logout=reads_protected(ctx.settings),
        summary=listing.summary,
        counts=listing.summary.counts(),
        total=listing.summary.total,
        sections=sections,
        listing=listing,
        pager=_pager(query, listing),
        query=query,
        filters=filters,
        filtered=bool(filters.on_rules or filters.statuses),
        statuses=BOARD_STATUSES,
        teams=list(rules.teams),
        # the summary and a card's owner and team link to them alone
        status_href={s: query.only(statuses=(s,)) for s in BOARD_STATUSES},
        team_href=lambda team: query.only(teams=(team,)),
        owner_href=lambda owner: query.only(owners=(owner,)),
        clear_href=query.only(),
        page_size=PAGE_SIZE,
        max_search=MAX_SEARCH,
        max_value=MAX_VALUE,
        sources_checked=len(health),
        down=down,
        updated=_when(now, tz),
    )


@dataclass(frozen=True)
class Pager:
    first: str | None  # links to pages; None where there is none to go to
    previous: str | None
    next: str | None
    last: str | None
    shown: str  # "KPIs 51–100 of 1,234 · page 2 of 25"


def _pager(query: BoardQuery, listing: BoardPage) -> Pager:
    page, pages = listing.page, listing.pages
    count = len(listing.kpis)
    shown = (
        f"KPIs {listing.first + 1:,}–{listing.first + count:,} of {listing.matched:,}"
        if count
        else f"none of {listing.summary.total:,} KPIs"
    )
    if pages > 1:
        shown += f" · page {page:,} of {pages:,}"
    return Pager(
        first=query.href(1) if page > 2 else None,
        previous=query.href(page - 1) if page > 1 else None,
        next=query.href(page + 1) if page < pages else None,
        last=query.href(pages) if page < pages - 1 else None,
        shown=shown,
    )


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
        team=row.team,
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
