"""The HTML pages against a real SQLite store filled by the real evaluation runner."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from kpiwatch.config.loader import load_rule_text
from kpiwatch.config.settings import Settings
from kpiwatch.errors import SourceError, SourceUnavailable
from kpiwatch.model import Observation
from kpiwatch.runtime.runner import Runner
from kpiwatch.store.repository import Store
from kpiwatch.testing import FakeSource, FixedClock, fake_workspace
from kpiwatch.web.context import WebContext
from kpiwatch.web.pages import pages_router

XSS_NAME = "<script>alert(1)</script>"
XSS_NOTE = '"><img src=x onerror=alert(1)>'
RULES = f"""
sources:
  wh: {{type: sql, url: "sqlite://"}}
teams:
  growth: {{}}
  platform: {{}}
kpis:
  - id: signups
    name: Weekly signups
    owner: ava@example.com
    team: growth
    direction: higher_is_better
    source: wh
    query: SELECT 1
    thresholds: {{yellow: 100, red: 80}}
    target: {{value: 150, by: 2026-12-31}}
  - id: churn
    name: Churn rate
    owner: ben@example.com
    team: growth
    unit: "%"
    direction: lower_is_better
    source: wh
    query: SELECT 1
    thresholds: {{yellow: 3, red: 5}}
    leading: [signups]
  - id: latency
    name: API latency p95
    owner: cy@example.com
    team: platform
    unit: ms
    direction: lower_is_better
    source: wh
    query: SELECT 1
    thresholds: {{yellow: 300, red: 500}}
  - id: uptime
    name: Uptime
    owner: cy@example.com
    team: platform
    unit: "%"
    direction: higher_is_better
    source: wh
    query: SELECT 1
    thresholds: {{red: 99}}
  - id: xss
    name: "{XSS_NAME}"
    owner: eve@example.com
    direction: higher_is_better
    source: wh
    query: SELECT 1
"""
NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[WebContext]:
    store = Store.open(f"sqlite:///{tmp_path}/state.db")
    clock = FixedClock(NOW - timedelta(hours=2))
    source = FakeSource("wh")
    workspace = fake_workspace(RULES, store.latest, {"wh": source})
    loaded = workspace.loaded
    runner = Runner(store, clock, workspace, tz=ZoneInfo("UTC"), review_time=time(9, 0))
    history = {"signups": 120.0, "churn": 2.0, "latency": 250.0, "uptime": 99.9, "xss": 1.0}
    store.add_observations(
        Observation(kpi_id, NOW - timedelta(days=30 - day, hours=3), base + day % 5)
        for kpi_id, base in history.items()
        for day in range(30)
    )
    first = {"signups": 130.0, "churn": 2.5, "latency": 250.0, "uptime": 99.95, "xss": 1.0}
    for kpi_id, value in first.items():
        source.set(kpi_id, value)
        runner.evaluate_kpi(kpi_id)
    clock.set(NOW - timedelta(minutes=10))
    source.set("churn", 6.2)
    source.set("latency", 340.0)
    for kpi_id in ("churn", "latency"):
        runner.evaluate_kpi(kpi_id)
    clock.set(NOW)
    # then wh itself fails (its latest outcome): its data incident opens, told to on-call,
    # and uptime is blind, its green verdict greyed
    source.set("uptime", SourceUnavailable("connection refused", source="wh"))
    runner.evaluate_kpi("uptime")
    churn = store.get_state("churn")
    assert churn is not None
    store.annotate("churn", NOW - timedelta(days=1), XSS_NOTE, "ben", NOW)
    store.annotate("churn", NOW - timedelta(days=2), "price change went live", "ben", NOW)
    store.ack("churn", churn.since, "ben", f"looking {XSS_NOTE}", NOW)
    yield WebContext(
        store=store,
        rules=lambda: loaded.rules,
        settings=Settings(),
        clock=clock,
        runner=runner,
        registry=CollectorRegistry(),
        heartbeat=lambda: 0.0,
    )
    store.close()


@pytest.fixture
def client(ctx: WebContext) -> TestClient:
    app = FastAPI()
    app.include_router(pages_router(ctx))
    return TestClient(app)


def _section(html: str, group: str) -> str:
    match = re.search(rf'<section class="group" aria-label="{group}">(.*?)</section>', html, re.S)
    assert match, f"no section {group}"
    return match.group(1)


def test_board_lists_what_needs_attention_first(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    # red, yellow, unknown (blind first), then green; each card names its team
    groups = re.findall(r'<section class="group" aria-label="([^"]+)">', html)
    assert groups == ["red", "yellow", "blind", "green"]
    assert re.findall(r'<a class="name" href="/kpis/(\w+)">', html) == [
        "churn", "latency", "uptime", "signups", "xss",
    ]  # fmt: skip
    assert "<h2>" in _section(html, "red")
    assert "Unknown: no fresh data</h2>" in _section(html, "blind")
    green = _section(html, "green")
    assert 'team <a href="?team=growth">growth</a>' in green  # signups
    assert 'Owner <a href="?owner=eve%40example.com">eve@example.com</a> · reviewed' in green
    assert "KPIs 1–5 of 5" not in html  # one page, no filter: no pager


def test_board_shows_status_colours_values_and_summary(client: TestClient) -> None:
    html = client.get("/").text
    churn = _section(html, "red")
    assert "border-left-color:#d93025" in churn
    assert "6.2 %" in churn
    assert 'class="badge escalated"' in churn
    assert "reviewed weekly" in churn
    assert '<svg class="spark"' in churn
    assert 'stroke="#d93025"' in churn
    assert "border-left-color:#f9ab00" in _section(html, "yellow")  # latency is yellow
    # uptime is unknown: blind, its green verdict greyed (the muted green), not "red" grey
    uptime = _section(html, "blind")
    assert 'class="card status-unknown blind"' in uptime
    assert "border-left-color:#8ec69e" in uptime
    assert "No fresh data since" in uptime
    assert "connection refused" in uptime
    assert "target 150 by 2026-12-31" in _section(html, "green")
    summary = re.search(r'<div class="summary"[^>]*>(.*?)</div>', html, re.S)
    assert summary is not None
    assert re.sub(r"<[^>]+>", "", summary.group(1)).split() == [
        "5", "KPIs:", "1", "red", "1", "yellow", "1", "unknown", "2", "green",
    ]  # fmt: skip
    assert '<a class="pill" href="?status=red">' in summary.group(1)
    flags = re.search(r'<div class="flags small"[^>]*>(.*?)</div>', html, re.S)
    assert flags is not None
    assert " ".join(re.sub(r"<[^>]+>", "", flags.group(1)).split()) == (
        "1 escalated · 0 reviews overdue · 1 blind (no fresh data)"
    )


def test_board_names_the_source_that_is_down(client: TestClient) -> None:
    # a source is down while its data incident is open (it fails as a whole): wh refused
    # the connection; a KPI's own failing query is no incident (see the blind tests)
    html = client.get("/").text
    alert = html[html.index('class="alert"') :]
    alert = alert[: alert.index("</div>")]
    assert "1 data source has an open data incident" in alert
    assert "show their last verdict greyed until it works again" in alert
    assert (
        "<li><strong>wh</strong> since 2026-03-02 08:00 UTC: source &#39;wh&#39;: "
        "connection refused · data owner on-call told</li>"
    ) in alert


def test_user_text_is_escaped_everywhere(client: TestClient) -> None:
    for path in ("/", "/kpis/xss", "/kpis/churn", "/kpis/nope%3Cscript%3E"):
        html = client.get(path).text
        assert "<script" not in html, path
        assert "<img" not in html, path
    board = client.get("/").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in board
    assert "looking &#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in board  # the ack comment
    page = client.get("/kpis/churn").text
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in page


def test_pages_reference_nothing_outside(client: TestClient) -> None:
    for path in ("/", "/kpis/signups", "/kpis/uptime", "/kpis/missing"):
        html = client.get(path).text
        # the SVG namespace is an identifier, not something a browser fetches
        fetched = html.replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert "http://" not in fetched, path
        assert "https://" not in fetched, path
        assert "<script" not in fetched
        assert "<link" not in fetched
        assert "<img" not in fetched
        assert '<meta name="viewport"' in html


def test_kpi_page_shows_header_chart_and_history(client: TestClient) -> None:
    response = client.get("/kpis/churn")
    assert response.status_code == 200
    html = response.text
    assert "<h1>Churn rate" in html
    assert "6.2 %" in html
    assert "yellow 3 %" in html
    assert "red 5 %" in html
    assert "ben@example.com" in html
    assert "growth" in html
    assert '<svg class="chart"' in html
    # a drawing for wide screens and one a phone's width, whose 11 px labels stay 11 px
    assert '<div class="chart-wide"><svg class="chart" xmlns="http://www.w3.org/2000/svg" ' \
        'width="720" height="260" viewBox="0 0 720 260"' in html
    assert '<div class="chart-small"><svg class="chart" xmlns="http://www.w3.org/2000/svg" ' \
        'width="360" height="220" viewBox="0 0 360 220"' in html
    assert "@media (max-width:600px){.chart-wide{display:none}.chart-small{display:block}}" in html
    assert 'stroke="#d93025" stroke-width="1.5" stroke-dasharray="6 4"' in html  # red line
    assert 'stroke="#f9ab00" stroke-width="1.5" stroke-dasharray="6 4"' in html  # yellow line
    assert "value 6.2 % &gt; red 5 %" in html  # the reason
    assert "price change went live" in html
    assert "Acknowledged</span> by ben" in html
    changes = html[html.index("Status changes") :]
    assert re.search(r"green</span> &rarr; <strong class=\"fg-red\">red", changes)


def test_kpi_page_draws_target_and_glide(client: TestClient) -> None:
    html = client.get("/kpis/signups").text
    assert 'class="glide"' in html
    assert "target 150" in html
    assert "2026-12-31" in html  # the chart runs to the target date


def test_kpi_page_links_leading_indicators_and_formula_inputs(ctx: WebContext) -> None:
    formula = """
  - id: churn_per_signup
    name: Churn per signup
    owner: ben@example.com
    direction: lower_is_better
    source: formula
    query: churn / signups
"""
    rules = load_rule_text(RULES + formula).rules
    app = FastAPI()
    app.include_router(pages_router(dataclasses.replace(ctx, rules=lambda: rules)))
    client = TestClient(app)
    churn = client.get("/kpis/churn").text
    assert re.search(
        r'<dt>Leading indicators</dt><dd><a href="/kpis/signups">Weekly signups</a>'
        r' <span class="badge bg-green green">Green</span>',
        churn,
    )
    assert '<dt>Used in formulas</dt><dd><a href="/kpis/churn_per_signup">' in churn
    assert "<dt>Computed from</dt>" not in churn
    signups = client.get("/kpis/signups").text
    assert '<dt>Leading indicator of</dt><dd><a href="/kpis/churn">Churn rate</a>' in signups
    page = client.get("/kpis/churn_per_signup").text
    assert "<dt>Formula</dt><dd><code>churn / signups</code></dd>" in page
    assert re.search(
        r'<dt>Computed from</dt><dd><a href="/kpis/churn">Churn rate</a> '
        r'<span class="badge bg-red red">Red</span> · <a href="/kpis/signups">',
        page,
    )


def test_unknown_kpi_is_a_404_with_did_you_mean(client: TestClient) -> None:
    response = client.get("/kpis/churm")
    assert response.status_code == 404
    assert 'href="/kpis/churn"' in response.text
    assert "Did you mean" in response.text


def test_board_with_no_data_yet(tmp_path: Path, ctx: WebContext) -> None:
    empty = Store.open(f"sqlite:///{tmp_path}/empty.db")
    try:
        app = FastAPI()
        app.include_router(pages_router(WebContext(**{**vars(ctx), "store": empty})))
        html = TestClient(app).get("/").text
        assert html.count('class="card status-unknown"') == 5
        assert "not evaluated yet" in html
        page = TestClient(app).get("/kpis/signups").text
        assert "no observations yet" in page
    finally:
        empty.close()


# -- blind KPIs (SPEC §5a) ------------------------------------------------------------


def _card(html: str, kpi_id: str) -> str:
    match = re.search(
        rf'<article class="([^"]*)"[^>]*>\s*<div class="head">\s*<a class="name" '
        rf'href="/kpis/{kpi_id}">.*?</article>',
        html,
        re.S,
    )
    assert match, f"no card for {kpi_id}"
    return match.group(0)


def test_a_blind_kpi_shows_its_last_verdict_greyed_and_the_source_incident(
    client: TestClient,
) -> None:
    card = _card(client.get("/").text, "uptime")
    assert card.startswith('<article class="card status-unknown blind" '
                           'style="border-left-color:#8ec69e">')  # fmt: skip
    assert '<span class="badge bg-green green blind" title=' in card  # the verdict, greyed
    assert '<div class="value fg-green">99.95 %</div>' in card  # the last value, kept
    assert 'stroke="#8ec69e"' in card  # the sparkline in the muted verdict colour
    assert (
        '<div class="blind-note"><strong>No fresh data since 2026-03-02 08:00 UTC</strong> '
        "(just now): source &#39;wh&#39;: connection refused"
        '<span class="told">data owner on-call told: wh data incident open since '
        "2026-03-02 08:00 UTC</span></div>"
    ) in card
    assert "Data problem:" not in card  # said once, in the note
    assert "green since 2026-03-02 06:00 UTC (2 hours)" in card  # the verdict's episode
    page = client.get("/kpis/uptime").text
    assert '<div class="panel kpi-head blind" style="border-left-color:#8ec69e">' in page
    assert re.search(
        r'<h1>Uptime <span class="badge bg-green green blind" title="[^"]+">Green</span> '
        r'<span class="badge bg-unknown unknown">Unknown</span>',
        page,
    )
    assert "No fresh data since 2026-03-02 08:00 UTC</strong> (just now)" in page
    assert "data owner on-call told: wh data incident open since 2026-03-02 08:00 UTC" in page
    assert "<dt>Green since</dt><dd>2026-03-02 06:00 UTC (2 hours)</dd>" in page


BLIND_RULES = """
sources:
  wh: {type: sql, url: "sqlite://", owner: data@example.com}
  crm: {type: sql, url: "sqlite://"}
kpis:
  - {id: revenue, name: Revenue, owner: rae@example.com, direction: higher_is_better,
     source: wh, query: SELECT 1, thresholds: {red: 100}}
  - {id: leads, name: Leads, owner: lee@example.com, direction: higher_is_better,
     source: crm, query: SELECT 1, thresholds: {yellow: 50, red: 10}}
  - {id: deals, name: Deals, owner: lee@example.com, direction: higher_is_better,
     source: crm, query: SELECT 1}
  - {id: newbie, name: Newbie, owner: nat@example.com, direction: higher_is_better,
     source: crm, query: SELECT 1}
"""


@dataclass
class Blind:
    client: TestClient
    store: Store
    source: FakeSource
    clock: FixedClock
    runner: Runner


@pytest.fixture
def blind(tmp_path: Path) -> Iterator[Blind]:
    """revenue red, then blind as wh (owned by data@example.com) refuses connections;
    leads yellow, then blind as its own query fails (crm works: deals); newbie blind
    before its first verdict."""
    store = Store.open(f"sqlite:///{tmp_path}/blind.db")
    clock = FixedClock(NOW - timedelta(hours=2))
    source = FakeSource("wh")
    workspace = fake_workspace(BLIND_RULES, store.latest, {"wh": source, "crm": source})
    runner = Runner(store, clock, workspace, tz=ZoneInfo("UTC"), review_time=time(9, 0))
    for kpi_id, value in {"revenue": 80.0, "leads": 30.0, "deals": 7.0}.items():
        source.set(kpi_id, value)
        runner.evaluate_kpi(kpi_id)
    clock.set(NOW)
    source.set("deals", 8.0)
    source.set("leads", SourceError("no such table: leads", source="crm"))
    source.set("newbie", SourceError("no such column: n", source="crm"))
    source.set("revenue", SourceUnavailable("connection refused", source="wh"))
    for kpi_id in ("deals", "leads", "newbie", "revenue"):
        runner.evaluate_kpi(kpi_id)
    rules = workspace.loaded.rules
    ctx = WebContext(
        store=store,
        rules=lambda: rules,
        settings=Settings(),
        clock=clock,
        runner=runner,
        registry=CollectorRegistry(),
        heartbeat=lambda: 0.0,
    )
    app = FastAPI()
    app.include_router(pages_router(ctx))
    yield Blind(TestClient(app), store, source, clock, runner)
    store.close()


def test_blind_for_its_sources_incident_names_the_sources_owner(blind: Blind) -> None:
    html = blind.client.get("/").text
    assert "<li><strong>wh</strong> since 2026-03-02 08:00 UTC: source &#39;wh&#39;: " \
        "connection refused · data owner data@example.com told</li>" in html  # fmt: skip
    card = _card(html, "revenue")
    assert 'class="card status-unknown blind" style="border-left-color:#ec9792"' in card
    assert '<span class="badge bg-red red blind"' in card
    assert '<div class="value fg-red">80</div>' in card
    assert (
        '<span class="told">data owner data@example.com told: wh data incident open since '
        "2026-03-02 08:00 UTC</span>"
    ) in card
    # a day later, still blind: its owner hears too (blind_notice_after), the note says so
    blind.clock.set(NOW + timedelta(days=1, hours=1))
    blind.runner.evaluate_kpi("revenue")
    card = _card(blind.client.get("/").text, "revenue")
    assert "No fresh data since 2026-03-02 08:00 UTC</strong> (1 day)" in card
    assert (
        "data owner data@example.com told: wh data incident open since 2026-03-02 08:00 UTC"
        " · owner told 2026-03-03 09:00 UTC</span>"
    ) in card
    # the incident closed, the KPI not evaluated since: no open incident is claimed
    blind.store.set_source_health("wh", up=True, now=NOW + timedelta(days=2), error=None)
    card = _card(blind.client.get("/").text, "revenue")
    assert "data incident open" not in card
    assert "a problem of source wh, data owner data@example.com" in card


def test_blind_for_its_own_query_says_when_its_owner_was_told(blind: Blind) -> None:
    html = blind.client.get("/").text
    alert = html[html.index('class="alert"') :]
    alert = alert[: alert.index("</div>")]
    assert "<strong>wh</strong>" in alert
    assert "crm" not in alert  # crm works (deals): only leads' own query fails
    card = _card(html, "leads")
    assert 'class="card status-unknown blind" style="border-left-color:#fcd57f"' in card
    assert '<span class="badge bg-yellow yellow blind"' in card
    assert (
        '<div class="blind-note"><strong>No fresh data since 2026-03-02 08:00 UTC</strong> '
        "(just now): source &#39;crm&#39;: no such table: leads"
        '<span class="told">owner told 2026-03-02 08:00 UTC</span></div>'
    ) in card
    assert "yellow since 2026-03-02 06:00 UTC" in card
    page = blind.client.get("/kpis/leads").text
    assert '<span class="badge bg-yellow yellow blind"' in page
    assert '<span class="told">owner told 2026-03-02 08:00 UTC</span>' in page
    assert "<dt>Yellow since</dt>" in page


def test_blind_before_any_verdict_is_plain_unknown_with_the_reason(blind: Blind) -> None:
    card = _card(blind.client.get("/").text, "newbie")
    assert card.startswith('<article class="card status-unknown" '
                           'style="border-left-color:#80868b">')  # fmt: skip
    assert '<span class="badge bg-unknown unknown">Unknown</span>' in card
    assert "Data problem: source &#39;crm&#39;: no such column: n" in card
    assert "blind" not in card
    assert "No fresh data" not in card
    page = blind.client.get("/kpis/newbie").text
    assert "Data problem: source &#39;crm&#39;: no such column: n" in page
    assert "blind-note" not in page.split("</style>")[1]
