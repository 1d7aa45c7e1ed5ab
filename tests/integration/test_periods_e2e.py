"""A monthly KPI over raw orders, end to end (SPEC §2a): the daemon's wiring (App) with a
fixed clock, a real SQLite warehouse with 14 months of orders, rules from a directory,
the fake Slack Web API and a real SMTP server.

Run at three instants: mid-month, the 1st and the 3rd. With ``complete_after: 2d`` the
month that ended on the 1st is judged from the 3rd; until then the one before. A late
refund for October, arriving on 1 December, restates October: one ``restated`` event,
and one notification because October's verdict changes.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from slack_api import SlackApi
from smtp_server import SmtpServer

from kpiwatch.config.settings import Settings
from kpiwatch.model import EventKind, Status
from kpiwatch.runtime.app import App
from kpiwatch.testing import FixedClock

RULES = """
sources:
  shop: {{type: sql, url: "sqlite:///{warehouse}"}}
teams:
  sales: {{slack: "#sales"}}
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
    every: 1h
    target:
      plan: {{2026-09: 30000, 2026-10: 31000, 2026-11: 33000, 2026-12: 40000}}
    thresholds: {{yellow: 95%, red: 90%}}
"""


def _orders(path: Path) -> None:
    """A 1000 $ order every day from October 2025 to 15 November 2026 (1100 $ in November)."""
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE orders (ordered_at TEXT, amount REAL)")
        day = date(2025, 10, 1)
        while day <= date(2026, 11, 30):
            amount = 1100.0 if (day.year, day.month) == (2026, 11) else 1000.0
            db.execute("INSERT INTO orders VALUES (?, ?)", (f"{day.isoformat()}T12:00:00", amount))
            day += timedelta(days=1)


@pytest.fixture
def app(
    tmp_path: Path, slack: SlackApi, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[App, FixedClock, Path]]:
    monkeypatch.chdir(tmp_path)  # no config/kpiwatch.toml or .env here
    for name in [n for n in os.environ if n.startswith("KPIWATCH_")]:
        monkeypatch.delenv(name)
    warehouse = tmp_path / "shop.db"
    _orders(warehouse)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "kpis.yaml").write_text(RULES.format(warehouse=warehouse))
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/state.db", rules_dir=tmp_path / "rules",
        slack_token=slack.token, slack_api_url=slack.base_url, smtp_host=smtp.host,
        smtp_port=smtp.port, smtp_starttls=False, delivery_timeout=5.0,
    )  # fmt: skip
    clock = FixedClock(datetime(2026, 11, 15, 12, 0, tzinfo=UTC))
    made = App(settings, clock)
    try:
        yield made, clock, warehouse
    finally:
        made.close()


def test_the_closed_month_is_judged_and_a_restated_month_is_told_once(
    app: tuple[App, FixedClock, Path], slack: SlackApi, smtp: SmtpServer
) -> None:
    daemon, clock, warehouse = app
    store = daemon.store

    # mid-November: October (closed on 3 November) is judged; the half month is not
    daemon.run_once()
    state = store.get_state("revenue")
    assert state is not None
    assert (state.observed_at, state.value, state.plan) == (
        datetime(2026, 10, 1, tzinfo=UTC), 31000, 31000,
    )  # fmt: skip
    assert state.status is Status.GREEN
    assert state.reasons == ("Oct 2026: value 31,000 $ within thresholds (plan 31,000 $)",)
    assert slack.posts() == []  # green from the start: nothing to tell

    # 1 December: November has ended but is not complete (2d): still October. A late
    # refund for 20 October arrived: October is restated and now below 90 % of plan
    with sqlite3.connect(warehouse) as db:
        db.execute("INSERT INTO orders VALUES ('2026-10-20T15:00:00', -5000)")
    clock.set(datetime(2026, 12, 1, 8, 0, tzinfo=UTC))
    daemon.run_once()
    state = store.get_state("revenue")
    assert state is not None
    assert (state.observed_at, state.value) == (datetime(2026, 10, 1, tzinfo=UTC), 26000)
    assert state.status is Status.RED
    [restated] = store.events(kinds=[EventKind.RESTATED])
    assert restated.data == {"period": "Oct 2026", "period_start": "2026-10-01T00:00:00+00:00",
                             "old": 31000.0, "new": 26000.0, "unit": "$"}  # fmt: skip
    [change] = store.events(kinds=[EventKind.STATUS_CHANGED])
    assert (change.data["from"], change.data["to"]) == ("green", "red")
    assert change.data["reasons"][0].startswith("Oct 2026: value 26,000 $ < red 27,900 $")
    # one notification of the change: to the team's channel, and the owner by email
    # (red); the escalation that red brings replies in its thread. The restatement
    # itself is recorded, not sent.
    posts = slack.posts()
    assert [p["text"].split(" ")[0] for p in posts] == ["🔴", "⏫"]
    assert posts[0]["text"].startswith("🔴 Monthly revenue green → red: 26,000 $")
    assert posts[1]["thread_ts"] == posts[0]["ts"]
    with smtp.lock:
        subjects = [(m["To"], str(m["Subject"]).split(" ")[1]) for m in smtp.messages]
    assert subjects == [("sam@example.com", "🔴"), ("sam@example.com", "⏫")]
    # the same poll again restates nothing more
    clock.set(datetime(2026, 12, 1, 9, 0, tzinfo=UTC))
    daemon.run_once()
    assert len(store.events(kinds=[EventKind.RESTATED])) == 1

    # 3 December: November is complete: judged, 33,000 $ against its plan of 33,000 $
    clock.set(datetime(2026, 12, 3, 8, 0, tzinfo=UTC))
    daemon.run_once()
    state = store.get_state("revenue")
    assert state is not None
    assert (state.observed_at, state.value, state.plan) == (
        datetime(2026, 11, 1, tzinfo=UTC), 33000, 33000,
    )  # fmt: skip
    assert state.status is Status.GREEN
    assert [e.data["to"] for e in store.events(kinds=[EventKind.STATUS_CHANGED])] == [
        "red", "green",
    ]  # fmt: skip
