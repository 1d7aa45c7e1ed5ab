"""The HTML pages' routes, and the status board (``/``): server-rendered HTML.

Everything a page needs is inline (CSS and SVG): no scripts, fonts or images
from anywhere, so the board works on a closed network and needs no CSP
exceptions. Templates autoescape every value; only the SVG from
:mod:`kpiwatch.web.svg` (numbers and escaped text) is marked safe.

The board lists what needs attention first, a page at a time, filtered and
searched by plain links and a GET form (:mod:`kpiwatch.web.listing`): the order
and the summary come from a lean snapshot of every KPI's state; full states,
sparklines and acks are read only for the KPIs on the page. A KPI judged per
period (SPEC §2a) shows the judged period with its value and plan (``Nov: 4.1 %
(plan 4.0 %)``); a blind one its last verdict greyed (:mod:`kpiwatch.web.views`).
The page of one KPI is :mod:`kpiwatch.web.kpi_page`.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup
from starlette.datastructures import QueryParams

from kpiwatch.config.rules import Kpi, RuleSet
from kpiwatch.model import KpiState, Observation, Status
from kpiwatch.notify.text import format_value
from kpiwatch.overview import KpiOverview, overview_of
from kpiwatch.web.auth import reads_protected
from kpiwatch.web.context import WebContext
from kpiwatch.web.kpi_page import kpi_html
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
from kpiwatch.web.svg import COLOURS, MUTED, sparkline_svg
from kpiwatch.web.views import (
    WORDS,
    Blindness,
    ago,
    blindness,
    board_tz,
    data_owner,
    judged_line,
    render,
    target_line,
    when,
)

SPARK_POINTS = 30  # a month of daily values: enough to see a trend at a glance
PAGE_SIZE = 50  # KPIs on a page of the board, unless ?size= says otherwise
MAX_PAGE_SIZE = 200
MAX_PAGE = 10**9  # beyond any board; keeps page * size a small number


# ---------------------------------------------------------------- view models


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
        return WORDS[Status(self.verdict)] if self.verdict is not None else self.word


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
        return HTMLResponse(kpi_html(ctx, kpi))

    return router


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
    tz = board_tz(ctx)
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
        blind = blindness(row, rules, health, tz, now)
        recent = read[kpi.id].recent
        sections[-1].cards.append(_card(row, kpi, recent, tz, now, blind, states.get(kpi.id)))
    down = [
        SourceProblem(name, when(since, tz) or "", error, data_owner(rules, name))
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
        updated=when(now, tz),
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
    period, plan = judged_line(kpi, state, tz, short=True)
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
        word=WORDS[row.status],
        value=value,
        target=target_line(kpi),
        owner=row.owner,
        team=row.team,
        review=row.review,
        escalated=row.escalated,
        since=when(row.since, tz),
        since_ago=ago(row.since, now),
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
