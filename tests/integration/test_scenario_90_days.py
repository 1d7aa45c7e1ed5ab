"""Ninety days of a team's KPIs, replayed through the daemon's parts (SPEC §5, §5a).

A fixed clock moves a day at a time; every day the pipeline runs what the daemon's
jobs run: the freshness checks, one evaluation of every KPI (the batched path), the
reminder tick and the outbox. The sources are real SQLite warehouses the test edits;
Slack is the Web API fake, email a real SMTP server (aiosmtpd). Every message that
arrives is counted per recipient and day, and the totals are asserted exactly.

The story (day 0 is Monday 2 March 2026, evaluations at 08:00 UTC):

* day 5: churn goes red: episode 1 opens a Slack thread, dana is emailed, reviews
  escalate; unacknowledged, it is reminded on days 6 and 8 (1d, then 2d later);
* day 10: dana acknowledges it: said in the thread, the parent edited to show it,
  and no reminder after that; day 12: an annotation, in the thread too;
* days 20-23: the warehouse is down (its file gone): one data incident to its owner,
  one recovery with the duration; nothing to #cs-kpis; churn stays red (since and
  ack unchanged), and its owners hear once, 1d into the outage (blind_notice_after);
* days 30-31: the signups query breaks (its table renamed): ava hears once, with
  the error verbatim; the source works, so no incident;
* days 40-50: the billing feed stops loading: its freshness check (max_age 2d)
  opens billing's incident on day 42 and closes it on day 50; backlog's owner hears
  1d in; #ops hears nothing;
* day 60: churn recovers: the recovery replies in episode 1's thread with
  reply_broadcast, and the parent is edited to "resolved";
* day 80: churn goes red again: a new thread, reminders on days 81, 83, 87.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from channels import real_channels
from slack_api import SlackApi
from smtp_server import SmtpServer

from kpiwatch.config.loader import load_rule_text
from kpiwatch.evaluation import ReminderPolicy
from kpiwatch.model import DeliveryState, EventKind, Status
from kpiwatch.notify.follow_ups import acknowledge, annotate
from kpiwatch.notify.notices import NoticeBuilder
from kpiwatch.notify.outbox import Outbox
from kpiwatch.notify.routing import Router
from kpiwatch.notify.suppression import Suppressor
from kpiwatch.runtime.runner import Runner
from kpiwatch.runtime.workspace import Workspace, fetch_pools
from kpiwatch.sources.registry import build_sources
from kpiwatch.store.repository import Store
from kpiwatch.testing import FixedClock

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # day 0, a Monday
DAY = timedelta(days=1)
UTC_TZ = ZoneInfo("UTC")
RULES = """
sources:
  warehouse:
    type: sql
    url: sqlite:///{warehouse}
    owner: data@example.com
  billing:
    type: sql
    url: sqlite:///{billing}
    owner: finance-data@example.com
    freshness: {{query: "SELECT max(loaded_at) FROM loads", max_age: 2d, every: 1h}}
teams:
  cs: {{slack: "#cs-kpis"}}
  ops: {{slack: "#ops"}}
kpis:
  - id: churn
    name: Churn
    owner: dana@example.com
    team: cs
    unit: "%"
    direction: lower_is_better
    source: warehouse
    query: SELECT value FROM churn
    thresholds: {{yellow: 4.5, red: 5.5}}
    escalation: {{review: weekly, stable_for: 14d}}
  - id: signups
    name: Signups
    owner: ava@example.com
    team: cs
    direction: higher_is_better
    source: warehouse
    query: SELECT value FROM signups
    thresholds: {{red: 50}}
  - id: backlog
    name: Invoice backlog
    owner: ops@example.com
    team: ops
    direction: lower_is_better
    source: billing
    query: SELECT value FROM backlog
    thresholds: {{red: 500}}
"""


class Scenario:
    """The daemon's jobs over real SQLite warehouses, with a clock moved a day at a time."""

    def __init__(self, tmp: Path, slack: SlackApi, smtp: SmtpServer) -> None:
        self.tmp = tmp
        self.slack = slack
        self.smtp = smtp
        self.warehouse = tmp / "warehouse.db"
        self.billing = tmp / "billing.db"
        self._sql(self.warehouse, "CREATE TABLE churn (value REAL)",
                  "INSERT INTO churn VALUES (4.0)", "CREATE TABLE signups (value REAL)",
                  "INSERT INTO signups VALUES (120)")  # fmt: skip
        self._sql(self.billing, "CREATE TABLE backlog (value REAL)",
                  "INSERT INTO backlog VALUES (100)", "CREATE TABLE loads (loaded_at TEXT)")
        self.clock = FixedClock(START)
        self.store = Store.open(f"sqlite:///{tmp}/state.db")
        text = RULES.format(warehouse=self.warehouse, billing=self.billing)
        loaded = load_rule_text(text, str(tmp / "rules.yaml"))
        channels = real_channels(self.store, slack, smtp, slack_timeout=2.0)
        router = Router(loaded.rules, channels=frozenset(channels))
        sources = build_sources(loaded.rules, self.store.latest, {})
        self.workspace = Workspace(loaded, sources, router, fetch_pools(loaded.rules))
        self.runner = Runner(self.store, self.clock, self.workspace, tz=UTC_TZ,
                             review_time=time(9, 0), reminders=ReminderPolicy(),
                             blind_notice_after=DAY)  # fmt: skip
        ticks = itertools.count(step=10.0)  # each send 10 s after the last: pacing never waits
        self.outbox = Outbox(
            self.store, channels, self.clock,
            NoticeBuilder(self.store, lambda: loaded.rules, "http://kpiwatch.test"),
            suppress=Suppressor(self.store, UTC_TZ).during, monotonic=lambda: next(ticks),
        )  # fmt: skip
        self.received: list[tuple[int, str, str]] = []  # (day, recipient, first line)
        self._seen_posts = 0
        self._seen_mails = 0

    def close(self) -> None:
        self.workspace.close()
        self.store.close()

    @staticmethod
    def _sql(path: Path, *statements: str) -> None:
        with sqlite3.connect(path) as db:
            for statement in statements:
                db.execute(statement)

    def set_value(self, table: str, value: float) -> None:
        self._sql(self.warehouse, f"UPDATE {table} SET value = {value}")

    def load_billing(self) -> None:
        """The billing ETL ran now: a fresh load."""
        self._sql(self.billing, f"INSERT INTO loads VALUES ('{self.clock.now().isoformat()}')")

    def warehouse_down(self) -> None:
        self.warehouse.rename(self.tmp / "warehouse.moved")
        self.workspace.sources["warehouse"].close()  # as a server restart drops connections

    def warehouse_up(self) -> None:
        (self.tmp / "warehouse.moved").rename(self.warehouse)

    def day(self, number: int) -> None:
        """Run day ``number``'s jobs (the clock is at its 08:00) and collect what arrived."""
        assert self.clock.now() == START + number * DAY
        self.runner.tick_freshness()
        stats = self.runner.evaluate_all()
        assert stats.failed == 0
        self.runner.tick_reminders()
        for _ in range(5):  # bounded: every message goes out on its first attempt
            self.outbox.deliver_due()
            if not self.store.messages(states=[DeliveryState.PENDING]):
                break
        assert not self.store.messages(states=[DeliveryState.PENDING, DeliveryState.DEAD])
        posts = self.slack.posts()
        for post in posts[self._seen_posts:]:
            self.received.append((number, f"slack:{post['channel']}", post["text"]))
        self._seen_posts = len(posts)
        with self.smtp.lock:
            mails = list(self.smtp.messages)
        for mail in mails[self._seen_mails:]:
            self.received.append((number, f"email:{mail['To']}", str(mail["Subject"])))
        self._seen_mails = len(mails)

    def to(self, recipient: str) -> list[tuple[int, str]]:
        return [(day, line) for day, who, line in self.received if who == recipient]


@pytest.fixture
def scenario(tmp_path: Path, slack: SlackApi, smtp: SmtpServer) -> Iterator[Scenario]:
    made = Scenario(tmp_path, slack, smtp)
    yield made
    made.close()


def _kinds(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """(day, the message's leading emoji or word): enough to tell the events apart."""
    return [(day, line.removeprefix("[kpiwatch] ").split(" ")[0]) for day, line in lines]


def test_ninety_days(scenario: Scenario, slack: SlackApi) -> None:
    store = scenario.store
    for day in range(91):
        scenario.clock.set(START + day * DAY)
        if day < 40 or day >= 50:
            scenario.load_billing()
        if day == 5:
            scenario.set_value("churn", 6.0)
        if day == 10:  # as `kpiwatch ack` and the API do
            state = store.get_state("churn")
            assert state is not None
            kpi = scenario.workspace.rules.by_id["churn"]
            acknowledge(store, scenario.workspace.router, kpi, state, "dana",
                        "pricing change, fix in progress", scenario.clock.now())  # fmt: skip
        if day == 12:
            kpi = scenario.workspace.rules.by_id["churn"]
            annotate(store, scenario.workspace.router, kpi, scenario.clock.now(),
                     "price rise on the 7th", "ben", scenario.clock.now())  # fmt: skip
        if day == 20:
            scenario.warehouse_down()
        if day == 24:
            scenario.warehouse_up()
        if day == 30:
            scenario._sql(scenario.warehouse, "ALTER TABLE signups RENAME TO signups_old")
        if day == 32:
            scenario._sql(scenario.warehouse, "ALTER TABLE signups_old RENAME TO signups")
        if day == 60:
            scenario.set_value("churn", 4.0)
        if day == 80:
            scenario.set_value("churn", 7.0)
        scenario.day(day)
        if day == 21:  # mid-outage: blind, the episode and its ack carried on
            churn = store.get_state("churn")
            assert churn is not None
            assert churn.status is Status.UNKNOWN
            assert churn.verdict is Status.RED
            assert churn.since == START + 5 * DAY
            assert store.ack_for("churn", churn.since) is not None
            assert churn.data_problem is not None
            assert churn.data_problem.scope == "source"

    # churn's verdicts: never "via unknown", whatever the data did in between
    changes = [e for e in store.events(kpi_id="churn") if e.kind is EventKind.STATUS_CHANGED]
    assert [(e.data["from"], e.data["to"], (e.at - START).days) for e in changes] == [
        ("green", "red", 5), ("red", "green", 60), ("green", "red", 80),
    ]  # fmt: skip

    # the channel of the KPIs' team hears the verdicts, the reminders and the escalation
    # story, and nothing of any data problem
    cs = _kinds(scenario.to(f"slack:{'#cs-kpis'}"))
    assert cs == [
        (5, "🔴"), (5, "⏫"),  # red: the thread's parent, then the escalation in it
        (6, "⏰"), (8, "⏰"),  # reminders, 1d then 2d later
        (10, "🙋"),  # acknowledged: said in the thread; no reminder after it
        (12, "📝"),  # an annotation
        (60, "✅"),  # recovery, in the thread, broadcast
        (74, "⏬"),  # 14d green: back to its own reviews
        (80, "🔴"), (80, "⏫"),  # a new episode, a new thread
        (81, "⏰"), (83, "⏰"), (87, "⏰"),
    ]
    assert scenario.to(f"slack:{'#ops'}") == []
    # dana: churn's red verdicts and escalations, and one note of the long outage
    assert _kinds(scenario.to("email:dana@example.com")) == [
        (5, "🔴"), (5, "⏫"), (6, "⏰"), (8, "⏰"), (21, "❔"), (74, "⏬"),
        (80, "🔴"), (80, "⏫"), (81, "⏰"), (83, "⏰"), (87, "⏰"),
    ]  # fmt: skip
    # ava: one note of the outage (1d in), one of her own broken query, verbatim
    ava = scenario.to("email:ava@example.com")
    assert _kinds(ava) == [(21, "❔"), (30, "❔")]
    assert "no such table: signups" in ava[1][1]
    # the data owners: one incident and one recovery per outage
    assert _kinds(scenario.to("email:data@example.com")) == [(20, "🚫"), (24, "✅")]
    assert "after 4d" in scenario.to("email:data@example.com")[1][1]
    assert _kinds(scenario.to("email:finance-data@example.com")) == [(42, "🚫"), (50, "✅")]
    assert _kinds(scenario.to("email:ops@example.com")) == [(43, "❔")]
    # nothing else went anywhere
    assert Counter(who for _, who, _ in scenario.received) == Counter({
        f"slack:{'#cs-kpis'}": 13, "email:dana@example.com": 11,
        "email:ava@example.com": 2, "email:data@example.com": 2,
        "email:finance-data@example.com": 2, "email:ops@example.com": 1,
    })  # fmt: skip

    # every follow-up in its episode's thread; the recovery broadcast; parents edited
    posts = slack.posts()
    first, second = posts[0], posts[8]
    assert [p.get("thread_ts") for p in posts] == [None] + [first["ts"]] * 7 + [None] + [
        second["ts"]
    ] * 4
    assert [p.get("reply_broadcast") for p in posts].count(True) == 1
    assert posts[6].get("reply_broadcast") is True  # the recovery, seen in the channel
    edits = [(u["ts"], u["text"].rsplit(" — ", 1)[-1]) for u in slack.updates()]
    assert edits[3] == (first["ts"], "🙋 acknowledged by dana: pricing change, fix in progress")
    assert edits[4][0] == first["ts"]
    assert edits[4][1].startswith("📝 note by ben")
    assert edits[5][0] == first["ts"]
    assert edits[5][1].startswith("✅ resolved after 7w 6d")  # day 5 to day 60
    assert {ts for ts, _ in edits} == {first["ts"], second["ts"]}
