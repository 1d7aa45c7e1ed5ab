"""The status board in a real headless Chromium: what a person sees, and screenshots.

Serves the pages with uvicorn on a free port, fills a real SQLite store through
the real runner (6 KPIs over 2 teams, one red and escalated, one blind as its
source refuses connections, annotations), then asks Chromium for the rendered DOM
(the board, filtered and paged by plain links) and PNGs.
The README's screenshots come from the demo daemon (tests/e2e/test_http_daemon.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import uvicorn
from browser import chromium_binary, run_chromium, visible_text
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from kpiwatch.config.settings import Settings
from kpiwatch.errors import SourceUnavailable
from kpiwatch.model import Observation
from kpiwatch.runtime.runner import Runner
from kpiwatch.store.repository import Store
from kpiwatch.testing import FakeSource, FixedClock, fake_workspace
from kpiwatch.web.context import WebContext
from kpiwatch.web.pages import pages_router

RULES = """
sources:
  warehouse: {type: sql, url: "sqlite://"}
  billing: {type: sql, url: "sqlite://"}
teams:
  growth: {}
  platform: {}
kpis:
  - {id: signups, name: Weekly signups, owner: ava@example.com, team: growth,
     direction: higher_is_better, source: warehouse, query: SELECT 1,
     thresholds: {yellow: 900, red: 800}, target: {value: 1400, by: 2026-09-30}}
  - {id: churn, name: Monthly churn, owner: ben@example.com, team: growth, unit: "%",
     direction: lower_is_better, source: warehouse, query: SELECT 1,
     thresholds: {yellow: 3, red: 4}, target: {value: 2, by: 2026-06-30}}
  - {id: mrr, name: Monthly recurring revenue, owner: ava@example.com, team: growth,
     unit: "$", direction: higher_is_better, source: billing, query: SELECT 1,
     review: quarterly, thresholds: {red: 100000}}
  - {id: latency, name: API latency p95, owner: cy@example.com, team: platform, unit: ms,
     direction: lower_is_better, source: warehouse, query: SELECT 1, review: weekly,
     thresholds: {yellow: 300, red: 500}}
  - {id: uptime, name: Uptime, owner: cy@example.com, team: platform, unit: "%",
     direction: higher_is_better, source: billing, query: SELECT 1,
     thresholds: {yellow: 99.9, red: 99.5}}
  - {id: nps, name: Net promoter score, owner: dee@example.com, direction: higher_is_better,
     source: warehouse, query: SELECT 1, review: quarterly, thresholds: {yellow: 30, red: 20}}
"""
NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
SERIES = {  # 90 daily values each: (start, daily drift, wobble)
    "signups": (950.0, 2.5, 40.0),
    "churn": (2.6, 0.012, 0.25),
    "mrr": (118_000.0, 120.0, 900.0),
    "latency": (240.0, 0.4, 25.0),
    "uptime": (99.95, 0.0, 0.03),
    "nps": (38.0, 0.02, 2.0),
}


def _value(kpi_id: str, day: int) -> float:
    start, drift, wobble = SERIES[kpi_id]
    return round(start + drift * day + wobble * ((day * 7919) % 13 - 6) / 6, 3)


@pytest.fixture(scope="module")
def chromium() -> str:
    return chromium_binary()


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("board")
    store = Store.open(f"sqlite:///{workdir}/state.db")
    clock = FixedClock(NOW - timedelta(days=1))
    warehouse, billing = FakeSource("warehouse"), FakeSource("billing")
    workspace = fake_workspace(RULES, store.latest, {"warehouse": warehouse, "billing": billing})
    loaded = workspace.loaded
    runner = Runner(store, clock, workspace, tz=ZoneInfo("UTC"), review_time=dtime(9, 0))
    store.add_observations(
        Observation(kpi_id, NOW - timedelta(days=90 - day, hours=2), _value(kpi_id, day))
        for kpi_id in SERIES
        for day in range(89)
    )
    for kpi_id in SERIES:
        source = billing if kpi_id in ("mrr", "uptime") else warehouse
        source.set(kpi_id, _value(kpi_id, 89))
        runner.evaluate_kpi(kpi_id)
    clock.set(NOW)
    warehouse.set("churn", 4.6)
    warehouse.set("latency", 342.0)
    # billing itself fails: its data incident opens and uptime is blind, its verdict greyed
    billing.set(
        "uptime", SourceUnavailable("connection refused (billing-db:5432)", source="billing")
    )
    for kpi_id in ("churn", "latency", "uptime"):
        runner.evaluate_kpi(kpi_id)
    churn = store.get_state("churn")
    assert churn is not None
    assert churn.escalated
    store.annotate("churn", NOW - timedelta(days=20), "Price change went live in EU", "ben", NOW)
    store.annotate("churn", NOW - timedelta(hours=6), "Payment provider outage", "ben", NOW)
    store.ack("churn", churn.since, "ben", "investigating with billing", NOW)
    ctx = WebContext(
        store=store,
        rules=lambda: loaded.rules,
        settings=Settings(),
        clock=clock,
        runner=runner,
        registry=CollectorRegistry(),
        heartbeat=lambda: 0.0,
    )
    app = FastAPI()
    app.include_router(pages_router(ctx))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start within 10 s")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    store.close()


def test_board_renders_attention_first_values_and_problems(
    chromium: str, base_url: str, tmp_path: Path
) -> None:
    dom = run_chromium(chromium, tmp_path / "profile", "--dump-dom", base_url + "/")
    text = visible_text(dom)
    assert "6 KPIs: 1 red 1 yellow 1 unknown 3 green" in text
    # no review tick ran since the first evaluations (a day ago): the monthly reviews
    # of signups and uptime, due yesterday at 09:00, are overdue
    assert "1 escalated · 2 reviews overdue · 1 blind (no fresh data)" in text
    assert "1 data source has an open data incident" in text
    assert "billing since 2026-03-02 08:00 UTC" in text
    # what needs attention first: red, yellow, blind, overdue, then green
    red = text[text.index("Red 1 KPI") : text.index("Yellow 1 KPI")]
    yellow = text[text.index("Yellow 1 KPI") : text.index("Unknown: no fresh data 1 KPI")]
    blind = text[
        text.index("Unknown: no fresh data 1 KPI") : text.index("Green, review overdue 1 KPI")
    ]
    overdue = text[text.index("Green, review overdue 1 KPI") : text.index("Green 2 KPIs")]
    green = text[text.index("Green 2 KPIs") :]
    assert "Monthly churn Red 4.6 %" in red
    assert "team growth" in red
    assert "escalated" in red
    assert "Acknowledged ben: investigating with billing" in red
    assert "API latency p95 Yellow 342 ms" in yellow
    assert "Uptime Green 99.9" in blind  # the last verdict and value, greyed
    assert (
        "No fresh data since 2026-03-02 08:00 UTC (just now): source 'billing': connection "
        "refused (billing-db:5432) data owner on-call told: billing data incident open since "
        "2026-03-02 08:00 UTC"
    ) in blind
    assert "Weekly signups Green" in overdue
    assert "Monthly recurring revenue Green" in green
    assert "Net promoter score" in green
    assert dom.count('<svg class="spark"') == 6
    assert "<script" not in dom


def test_board_filters_and_pages_without_script(
    chromium: str, base_url: str, tmp_path: Path
) -> None:
    url = base_url + "/?team=growth&size=2"
    text = visible_text(run_chromium(chromium, tmp_path / "p1", "--dump-dom", url))
    assert "KPIs 1–2 of 3 · page 1 of 2" in text
    assert "Monthly churn Red" in text
    assert "Weekly signups Green" in text
    assert "API latency p95" not in text  # platform's
    url = base_url + "/?team=growth&size=2&page=2"
    text = visible_text(run_chromium(chromium, tmp_path / "p2", "--dump-dom", url))
    assert "KPIs 3–3 of 3 · page 2 of 2" in text
    assert "Monthly recurring revenue Green" in text
    url = base_url + "/?q=LATENCY"
    text = visible_text(run_chromium(chromium, tmp_path / "p3", "--dump-dom", url))
    assert "API latency p95 Yellow" in text
    assert "Monthly churn" not in text


def test_kpi_page_renders_chart_and_history(chromium: str, base_url: str, tmp_path: Path) -> None:
    dom = run_chromium(chromium, tmp_path / "profile", "--dump-dom", base_url + "/kpis/churn")
    text = visible_text(dom)
    assert "Monthly churn Red escalated" in text
    assert "target 2 % by 2026-06-30" in text
    assert "Payment provider outage" in text
    assert "yellow → red" in text
    assert '<svg class="chart"' in dom
    assert 'class="glide"' in dom
    missing = run_chromium(chromium, tmp_path / "p2", "--dump-dom", base_url + "/kpis/chrun")
    assert "Did you mean" in visible_text(missing)
    assert "Monthly churn" in visible_text(missing)


@pytest.mark.parametrize(
    ("path", "name", "size"),
    [
        ("/", "status-board.png", "1280,1000"),
        ("/kpis/churn", "kpi-page.png", "1280,1000"),
        ("/", "status-board-phone.png", "390,1400"),
    ],
)
def test_screenshots(
    chromium: str, base_url: str, tmp_path: Path, path: str, name: str, size: str
) -> None:
    shot = tmp_path / name
    run_chromium(
        chromium, tmp_path / "profile", f"--screenshot={shot}", f"--window-size={size}",
        base_url + path,
    )  # fmt: skip
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the README's come from the demo
