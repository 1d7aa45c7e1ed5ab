"""KPIs judged per period (SPEC §2a) on the board and their pages, against a real SQLite
store filled by the real runner: the judged period with its plan, thresholds in % of the
plan, and the periods drawn as bars with the plan, the open period and restatements.

Periods are Berlin's (KPIWATCH_TIMEZONE): a month starts at 23:00 or 22:00 UTC the day
before, so a label read in UTC would name the wrong month.
"""

from __future__ import annotations

import dataclasses
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from kpiwatch.config.rules import Kpi
from kpiwatch.config.settings import Settings
from kpiwatch.model import EventKind, Observation
from kpiwatch.overview import overview
from kpiwatch.runtime.runner import Runner
from kpiwatch.sources.base import FetchResult
from kpiwatch.store.repository import Store
from kpiwatch.testing import FakeSource, FixedClock, fake_workspace
from kpiwatch.web.context import WebContext
from kpiwatch.web.pages import pages_router

BERLIN = ZoneInfo("Europe/Berlin")
SVG = "{http://www.w3.org/2000/svg}"
PLAN_SQL = "SELECT month, plan FROM ticket_plans"
RULES = f"""
sources:
  shop: {{type: sql, url: "sqlite://"}}
teams:
  sales: {{}}
kpis:
  - id: revenue
    name: Monthly revenue
    owner: sam@example.com
    team: sales
    unit: $
    direction: higher_is_better
    source: shop
    query: SELECT ordered_at, amount FROM orders
    period: month
    aggregate: sum
    complete_after: 2d
    target:
      plan: {{2026-09: 30000, 2026-10: 31000, 2026-11: 33000, 2026-12: 40000}}
    thresholds: {{yellow: 95%, red: 90%}}
  - id: conversion
    name: Conversion
    owner: sam@example.com
    team: sales
    unit: "%"
    direction: higher_is_better
    source: shop
    query: SELECT day, rate FROM conversion
    period: month
    aggregate: avg
    target:
      plan: {{2026-11: 4.2}}
    thresholds: {{yellow: 95%, red: 90%}}
  - id: tickets
    name: Tickets closed
    owner: tia@example.com
    team: sales
    direction: higher_is_better
    source: shop
    query: SELECT day, closed FROM tickets
    period: month
    aggregate: sum
    target: {{plan_query: "{PLAN_SQL}"}}
    thresholds: {{yellow: 80%, red: 50%}}
  - id: visits
    name: Weekly visits
    owner: vic@example.com
    team: sales
    direction: higher_is_better
    source: shop
    query: SELECT week, visits FROM visits
    period: week
    thresholds: {{yellow: 900, red: 500}}
  - id: churn
    name: Churn rate
    owner: ben@example.com
    team: sales
    unit: "%"
    direction: lower_is_better
    source: shop
    query: SELECT 1
    thresholds: {{yellow: 3, red: 5}}
"""
FIRST = datetime(2026, 12, 9, 8, 0, tzinfo=UTC)
NOW = datetime(2026, 12, 10, 8, 0, tzinfo=UTC)


class PlanSource(FakeSource):
    """Answers a KPI's ``plan_query`` with :attr:`plans`, its query with what a test set."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.plans: list[tuple[datetime, float]] = []

    def fetch(self, kpi: Kpi, now: datetime) -> FetchResult:
        if kpi.query == PLAN_SQL:
            return FetchResult(tuple(Observation(kpi.id, at, v) for at, v in self.plans), 0.0)
        return super().fetch(kpi, now)


def _daily(first: date, last: date, value: float | None = None) -> list[tuple[datetime, float]]:
    """A row at noon (UTC) every day: ``value``, or 1,100 in November 2026, else 1,000."""
    rows = []
    day = first
    while day <= last:
        amount = value if value is not None else (1100.0 if day >= date(2026, 11, 1) else 1000.0)
        rows.append((datetime.combine(day, time(12), UTC), amount))
        day += timedelta(days=1)
    return rows


def _month(year: int, month: int) -> datetime:
    """The UTC instant at which a Berlin month starts."""
    return datetime(year, month, 1, tzinfo=BERLIN).astimezone(UTC)


@dataclass
class Site:
    client: TestClient
    store: Store
    source: PlanSource
    clock: FixedClock
    runner: Runner
    ctx: WebContext


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    """On 10 December 2026 (Berlin) November is judged (December is open): revenue
    30 x 1,100 $ = 33,000 $ against its plan of 33,000 $; conversion 4.1 % against 4.2 %;
    tickets 300 against a queried plan of 320. October was restated on the last poll:
    a refund of 5,000 $ arrived late."""
    store = Store.open(f"sqlite:///{tmp_path}/state.db")
    clock = FixedClock(FIRST)
    source = PlanSource("shop")
    workspace = fake_workspace(RULES, store.latest, {"shop": source})
    runner = Runner(store, clock, workspace, tz=BERLIN, review_time=time(9, 0))
    orders = _daily(date(2025, 10, 1), date(2026, 12, 8))
    source.set("revenue", orders)
    source.set("conversion", _daily(date(2026, 10, 1), date(2026, 12, 8), 4.1))
    source.set("tickets", _daily(date(2026, 10, 1), date(2026, 12, 8), 10.0))
    source.plans = [(_month(2026, 10), 310.0), (_month(2026, 11), 320.0)]
    weeks = [(datetime(2026, 9, 7, 12, tzinfo=UTC) + timedelta(weeks=w), 1000.0 + w)
             for w in range(14)]  # fmt: skip
    source.set("visits", weeks)
    source.set("churn", 2.5)
    for kpi_id in ("revenue", "conversion", "tickets", "visits", "churn"):
        runner.evaluate_kpi(kpi_id)
    clock.set(NOW)
    late = (datetime(2026, 10, 20, 15, tzinfo=UTC), -5000.0)
    source.set("revenue", [*orders, late, (datetime(2026, 12, 9, 12, tzinfo=UTC), 1100.0)])
    runner.evaluate_kpi("revenue")
    rules = workspace.loaded.rules
    ctx = WebContext(
        store=store,
        rules=lambda: rules,
        settings=Settings(timezone="Europe/Berlin"),
        clock=clock,
        runner=runner,
        registry=CollectorRegistry(),
        heartbeat=lambda: 0.0,
    )
    app = FastAPI()
    app.include_router(pages_router(ctx))
    yield Site(TestClient(app), store, source, clock, runner, ctx)
    store.close()


def _card(html: str, kpi_id: str) -> str:
    match = re.search(
        rf'<article class="[^"]*"[^>]*>\s*<div class="head">\s*<a class="name" '
        rf'href="/kpis/{kpi_id}">.*?</article>',
        html,
        re.S,
    )
    assert match, f"no card for {kpi_id}"
    return match.group(0)


def _text(html: str) -> str:
    """What a person reads: the tags gone, entities of the tests' text decoded."""
    plain = re.sub(r"<[^>]+>", "", html).replace("&amp;", "&")
    return " ".join(plain.split())


def _div(html: str, css_class: str) -> str:
    match = re.search(rf'<div class="{css_class}[^"]*">(.*?)</div>', html, re.S)
    assert match, css_class
    return _text(match.group(1))


def _charts(page: str) -> tuple[ET.Element, ET.Element]:
    wide = re.search(r'<div class="chart-wide">(<svg.*?</svg>)</div>', page, re.S)
    small = re.search(r'<div class="chart-small">(<svg.*?</svg>)</div>', page, re.S)
    assert wide is not None
    assert small is not None
    return ET.fromstring(wide.group(1)), ET.fromstring(small.group(1))


def _bars(svg: ET.Element) -> list[ET.Element]:
    return [g for g in svg.iter(f"{SVG}g") if "bar" in (g.get("class") or "").split()]


def _title(element: ET.Element) -> str:
    title = element.findtext(f"{SVG}title")
    assert title is not None
    return title


def test_the_state_is_the_judged_month_with_its_plan(site: Site) -> None:
    revenue = site.store.get_state("revenue")
    assert revenue is not None
    assert (revenue.observed_at, revenue.value, revenue.plan) == (_month(2026, 11), 33000, 33000)
    [restated] = site.store.events(kpi_id="revenue", kinds=[EventKind.RESTATED])
    assert (restated.data["period"], restated.data["old"], restated.data["new"]) == (
        "Oct 2026", 31000.0, 26000.0,
    )  # fmt: skip


def test_the_board_shows_the_judged_period_its_value_and_plan(site: Site) -> None:
    html = site.client.get("/").text
    revenue = _card(html, "revenue")
    assert _div(revenue, "value") == "Nov: 33,000 $ (plan 33,000 $)"
    assert _div(revenue, "target") == "yellow 95 % of plan · red 90 % of plan"
    conversion = _card(html, "conversion")
    assert _div(conversion, "value") == "Nov: 4.1 % (plan 4.2 %)"
    tickets = _card(html, "tickets")  # the queried plan, as judged
    assert _div(tickets, "value") == "Nov: 300 (plan 320)"
    assert _div(tickets, "target") == "yellow 80 % of plan · red 50 % of plan"
    visits = _card(html, "visits")  # a week without a plan: its thresholds are levels
    assert _div(visits, "value") == "W49: 1012"
    assert _div(visits, "target") == "no target"
    churn = _card(html, "churn")  # no period: as before
    assert _div(churn, "value") == "2.5 %"
    assert _div(churn, "target") == "no target"


def test_a_month_without_a_plan_says_so(site: Site) -> None:
    # January: December is judged, and conversion's plan has no December
    site.clock.set(datetime(2027, 1, 5, 8, 0, tzinfo=UTC))
    site.source.set("conversion", _daily(date(2026, 10, 1), date(2027, 1, 4), 4.1))
    site.runner.evaluate_kpi("conversion")
    state = site.store.get_state("conversion")
    assert state is not None
    assert (state.observed_at, state.plan) == (_month(2026, 12), None)
    card = _card(site.client.get("/").text, "conversion")
    assert _div(card, "value") == "Dec: 4.1 % (no plan)"
    assert _div(card, "target") == "yellow 95 % of plan · red 90 % of plan"
    page = site.client.get("/kpis/conversion").text
    assert "<dd><span class=\"fg-yellow\">yellow 95 % of plan</span>" in page


def test_percent_thresholds_are_never_shown_as_bare_numbers(site: Site) -> None:
    for path in ("/", "/kpis/revenue", "/kpis/tickets"):
        text = _text(site.client.get(path).text.split("</style>")[1])
        assert not re.search(r"(yellow|red) (95|90|80|50)(?! % of plan)", text), path
    page = site.client.get("/kpis/revenue").text
    facts = re.search(r"<dt>Thresholds</dt><dd>(.*?)</dd>", page, re.S)
    assert facts is not None
    assert _text(facts.group(1)) == "yellow 95 % of plan (31,350 $) · red 90 % of plan (29,700 $)"
    wide, small = _charts(page)
    for svg in (wide, small):  # no threshold lines: a level in % differs per month
        assert not [el for el in svg.iter() if el.get("stroke-dasharray")]


def test_the_kpi_page_heads_with_the_judged_period(site: Site) -> None:
    page = site.client.get("/kpis/revenue").text
    assert re.search(r'font-weight:700">Nov 2026: 33,000 \$</span>\s*'
                     r'<span class="muted">\(plan 33,000 \$\)</span>', page)  # fmt: skip
    assert "<dt>Period judged</dt><dd>Nov 2026</dd>" in page
    assert "(last 15 months)" in page
    # the events name the restated month
    assert "✏️ Monthly revenue: Oct 2026 restated, 31,000 $ → 26,000 $" in page


def test_the_kpi_page_draws_months_as_bars_with_plan_open_and_restated(site: Site) -> None:
    wide, small = _charts(site.client.get("/kpis/revenue").text)
    assert (wide.get("width"), small.get("width")) == ("720", "360")
    bars = _bars(wide)
    # October 2025 (the first orders) to December 2026, the open month
    assert len(bars) == 15
    titles = [_title(bar) for bar in bars]
    assert titles[0] == "Oct 2025: 31,000 $"
    assert titles[-3:] == [
        "Oct 2026: 26,000 $, plan 31,000 $, restated (was 31,000 $)",
        "Nov 2026: 33,000 $, plan 33,000 $",
        "Dec 2026: 9900 $ so far (open: not final yet), plan 40,000 $",
    ]
    # the plan: a tick on the four months that have one; the open month hatched
    ticks = [bar for bar in bars if bar.find(f"{SVG}line[@class='plan']") is not None]
    assert [_title(b).split(":")[0] for b in ticks] == [
        "Sep 2026", "Oct 2026", "Nov 2026", "Dec 2026",
    ]  # fmt: skip
    opened = [bar for bar in bars if "open" in (bar.get("class") or "")]
    assert [_title(b)[:8] for b in opened] == ["Dec 2026"]
    rect = opened[0].find(f"{SVG}rect")
    assert rect is not None
    assert rect.get("fill") == "url(#open-720x260)"
    pattern = wide.find(f"{SVG}defs/{SVG}pattern")
    assert pattern is not None
    assert pattern.get("id") == "open-720x260"
    restated = [bar for bar in bars if bar.find(f"{SVG}path[@class='restated']") is not None]
    assert [_title(b)[:8] for b in restated] == ["Oct 2026"]
    # the plan tick is at the plan's height: November's at the top of its bar (33,000 $)
    november = bars[-2]
    bar_rect, tick = november.find(f"{SVG}rect"), november.find(f"{SVG}line")
    assert bar_rect is not None
    assert tick is not None
    assert float(tick.get("y1") or 0) == pytest.approx(float(bar_rect.get("y") or 0), abs=0.1)
    # accessible: named for screen readers, the periods, the open and the restated one
    label = wide.get("aria-label") or ""
    assert label == (
        "bar chart of 15 months, Oct 2025 to Dec 2026, each with its plan as a tick; "
        "open (not final): Dec 2026; restated: Oct 2026"
    )
    assert wide.get("role") == "img"
    assert _title(wide) == label
    # a phone gets the last 13, its own pattern (the wide drawing is not displayed there)
    small_bars = _bars(small)
    assert len(small_bars) == 13
    assert _title(small_bars[0]).startswith("Dec 2025: ")
    assert small.find(f"{SVG}defs/{SVG}pattern[@id='open-360x220']") is not None


def test_the_bars_are_labelled_with_months_and_years_and_fit_a_phone(site: Site) -> None:
    wide, small = _charts(site.client.get("/kpis/revenue").text)

    def labels(svg: ET.Element) -> list[str]:
        return [t.text or "" for t in svg.iter(f"{SVG}text")]

    shown = labels(wide)
    assert shown[2:] == [  # after the axis' top and bottom values
        "Oct", "2025", "Nov", "Dec", "Jan", "2026", "Feb", "Mar", "Apr", "May", "Jun", "Jul",
        "Aug", "Sep", "Oct", "Nov", "Dec",
    ]  # fmt: skip
    assert shown[:2] == ["42,400 $", "0 $"]  # bars start at zero; room above the plan
    # 13 bars in 360 px: every other month labelled, counting back from the newest; 2025
    # would run into 2026 a bar later: the year of the lone December is left to the reader
    assert labels(small)[2:] == ["Dec", "2026", "Feb", "Apr", "Jun", "Aug", "Oct", "Dec"]
    texts = [t for t in small.iter(f"{SVG}text") if t.text in ("Feb", "Apr")]
    xs = [float(t.get("x") or 0) for t in texts]
    assert xs[1] - xs[0] > 3 * 6.5 + 6  # room for a label between two labels' centres


def _legend(page: str) -> list[str]:
    legend = re.search(r'<div class="legend">(.*?)</div>', page, re.S)
    assert legend is not None
    return re.findall(r"</span>([^<]+)</span>", legend.group(1))


def test_the_legend_names_what_the_bars_show(site: Site) -> None:
    assert _legend(site.client.get("/kpis/revenue").text) == [
        "month", "open month (not final)", "plan", "restated (late data changed it)",
    ]  # fmt: skip
    assert _legend(site.client.get("/kpis/visits").text) == [
        "week", "open week (not final)", "yellow threshold", "red threshold",
    ]  # fmt: skip
    assert _legend(site.client.get("/kpis/tickets").text) == [
        "month", "open month (not final)", "plan",
    ]  # fmt: skip


def test_a_queried_plan_is_drawn_only_for_the_judged_month(site: Site) -> None:
    wide, _ = _charts(site.client.get("/kpis/tickets").text)
    bars = _bars(wide)
    assert [_title(b) for b in bars] == [
        "Oct 2026: 310",
        "Nov 2026: 300, plan 320",
        "Dec 2026: 80 so far (open: not final yet)",
    ]
    assert len(list(wide.iter(f"{SVG}line"))) == 1  # the one tick; no threshold lines


def test_absolute_thresholds_are_drawn_across_weekly_bars(site: Site) -> None:
    page = site.client.get("/kpis/visits").text
    wide, _ = _charts(page)
    assert [_title(b)[:4] for b in _bars(wide)][-2:] == ["week", "week"]
    assert _title(_bars(wide)[-2]) == "week of 2026-11-30: 1012"
    assert _title(_bars(wide)[-1]) == "week of 2026-12-07: 1013 so far (open: not final yet)"
    dashed = [el.get("stroke") for el in wide.iter() if el.get("stroke-dasharray") == "6 4"]
    assert dashed == ["#f9ab00", "#d93025"]
    assert [t.text for t in wide.iter(f"{SVG}text")][-1] == "W50"
    assert "<dt>Thresholds</dt><dd><span class=\"fg-yellow\">yellow 900</span>" in page
    assert "(last 14 weeks)" in page


def test_a_kpi_without_a_period_keeps_its_line_chart(site: Site) -> None:
    page = site.client.get("/kpis/churn").text
    assert '<svg class="chart" xmlns=' in page
    assert "bars" not in page.split("</style>")[1]
    assert "<dt>Observed</dt>" in page
    assert "(last 1 value)" in page


def test_a_period_kpi_before_any_data(tmp_path: Path, site: Site) -> None:
    empty = Store.open(f"sqlite:///{tmp_path}/empty.db")
    try:
        app = FastAPI()
        app.include_router(pages_router(dataclasses.replace(site.ctx, store=empty)))
        client = TestClient(app)
        card = _card(client.get("/").text, "revenue")
        assert _div(card, "value") == "no value"
        assert _div(card, "target") == "yellow 95 % of plan · red 90 % of plan"
        page = client.get("/kpis/revenue").text
        wide, _ = _charts(page)
        assert [t.text for t in wide.iter(f"{SVG}text")] == ["no observations yet"]
        assert wide.get("aria-label") == "no months yet"
        assert "<dt>Period judged</dt><dd>—</dd>" in page
        assert '<span class="muted">plan per month</span>' in page
        assert "(last 0 months)" in page
    finally:
        empty.close()


def test_the_overview_gives_percent_thresholds_as_levels_of_the_judged_plan(site: Site) -> None:
    # what status --json and the API's KPI objects show: numbers in the KPI's unit
    rules = site.ctx.rules()
    rows = {row.id: row for row in overview(rules, site.store.states())}
    assert (rows["revenue"].target, rows["revenue"].thresholds) == (
        33000.0, {"yellow": 31350.0, "red": 29700.0},
    )  # fmt: skip
    assert (rows["tickets"].target, rows["tickets"].thresholds) == (
        320.0, {"yellow": 256.0, "red": 160.0},
    )  # fmt: skip
    assert rows["visits"].thresholds == {"yellow": 900.0, "red": 500.0}  # as written
    never = overview(rules, {})
    assert {r.id: r.thresholds for r in never if r.id in ("revenue", "visits")} == {
        "revenue": {},  # no plan known: nothing in $ to give
        "visits": {"yellow": 900.0, "red": 500.0},
    }
