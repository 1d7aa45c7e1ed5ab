"""Transitions to people, end to end in-process: real evaluation, store, outbox, a local
Slack Web API and a real SMTP server; then the faults each side can throw.

Only the clock is ours; every message is asserted where it was received.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from slack_api import Fault, SlackApi, slack_api
from smtp_server import SmtpServer, running_smtp

from kpiwatch.config.loader import load_rule_text
from kpiwatch.model import DeliveryState
from kpiwatch.notify.channels.email import EmailChannel
from kpiwatch.notify.channels.slack import SlackChannel
from kpiwatch.notify.notices import NoticeBuilder
from kpiwatch.notify.outbox import Outbox
from kpiwatch.notify.routing import Router
from kpiwatch.runtime.channels import StoreThreads
from kpiwatch.runtime.runner import Runner
from kpiwatch.runtime.workspace import Workspace
from kpiwatch.store.repository import Store
from kpiwatch.testing import FakeSource, FixedClock

RULES = """
sources: {wh: {type: sql, url: "sqlite://"}}
teams: {cs: {slack: "#cs-kpis"}}
kpis:
  - id: churn
    name: "<!channel> churn & co"
    owner: dana@example.com
    team: cs
    unit: "%"
    direction: lower_is_better
    source: wh
    query: SELECT 1
    thresholds: {yellow: 4.5, red: 5.5}
"""
START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


class Pipeline:
    """The daemon's delivery path with real channels and a clock we move."""

    def __init__(self, tmp: Path, slack: SlackApi, smtp: SmtpServer) -> None:
        self.clock = FixedClock(START)
        self.store = Store.open(f"sqlite:///{tmp}/state.db")
        self.source = FakeSource("wh")
        loaded = load_rule_text(RULES, "rules.yaml")
        channels: dict[str, Any] = {
            "slack": SlackChannel(token=slack.token, webhook_url=None, api_url=slack.base_url,
                                  threads=StoreThreads(self.store), timeout=1.0),
            "email": EmailChannel(host=smtp.host, port=smtp.port, starttls=False,
                                  sender="kpiwatch@example.com", timeout=2.0),
        }  # fmt: skip
        router = Router(loaded.rules, channels=frozenset(channels))
        self.runner = Runner(
            self.store, self.clock, Workspace(loaded, {"wh": self.source}, router),
            tz=ZoneInfo("UTC"), review_time=time(9, 0),
        )  # fmt: skip
        ticks = itertools.count(step=10.0)  # each send 10 s after the last: pacing never waits
        self.outbox = Outbox(
            self.store, channels, self.clock,
            NoticeBuilder(self.store, lambda: loaded.rules, "http://kpiwatch.test"),
            monotonic=lambda: next(ticks),
        )  # fmt: skip

    def observe(self, value: float) -> None:
        self.clock.advance(timedelta(hours=1))
        self.source.set("churn", value)
        self.runner.evaluate_kpi("churn")

    def deliver_until_settled(self, rounds: int = 12, between: Any = None) -> None:
        """Deliver; jump the clock to each retry time, as the daemon's ticks would."""
        for number in range(rounds):
            if between is not None:
                between(number)
            self.outbox.deliver_due()
            pending = self.store.messages(states=[DeliveryState.PENDING])
            if not pending:
                return
            upcoming = [m.next_attempt_at for m in pending if m.next_attempt_at > self.clock.now()]
            if upcoming:  # else something due was held back behind its conversation's head
                self.clock.set(min(upcoming))


@pytest.fixture
def slack() -> Iterator[SlackApi]:
    with slack_api() as server:
        yield server


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with running_smtp() as server:
        yield server


@pytest.fixture
def pipeline(tmp_path: Path, slack: SlackApi, smtp: SmtpServer) -> Iterator[Pipeline]:
    made = Pipeline(tmp_path, slack, smtp)
    yield made
    made.store.close()


def _delivered_posts(slack: SlackApi) -> list[dict[str, Any]]:
    return [p for p in slack.posts() if "ts" in p]


def _png_parts(message: EmailMessage) -> list[bytes]:
    return [
        part.get_payload(decode=True)  # type: ignore[misc]
        for part in message.walk()
        if part.get_content_type() == "image/png"
    ]


def test_one_message_per_transition_threads_and_email(
    pipeline: Pipeline, slack: SlackApi, smtp: SmtpServer
) -> None:
    pipeline.observe(3.9)  # first evaluation, green: nobody is told
    pipeline.observe(6.2)  # red: Slack + owner email, escalated: thread reply + owner email
    pipeline.observe(6.3)  # still red: nothing new
    pipeline.observe(3.8)  # green again: a new episode, a new top-level message
    pipeline.deliver_until_settled()

    red, escalated, green = _delivered_posts(slack)
    assert red["channel"] == "#cs-kpis"
    assert "thread_ts" not in red or not red["thread_ts"]
    assert escalated["thread_ts"] == red["ts"]
    assert not green.get("thread_ts")
    everything = str(red["blocks"]) + red["text"]
    assert "<!channel>" not in everything
    assert "&lt;!channel&gt; churn &amp; co" in everything

    assert [m["To"] for m in smtp.messages] == ["dana@example.com"] * 2
    subjects = [str(m["Subject"]) for m in smtp.messages]
    assert any("is red" in s for s in subjects), subjects
    for message in smtp.messages:
        [png] = _png_parts(message)
        assert png.startswith(b"\x89PNG")
    assert all(m.state is DeliveryState.SENT for m in pipeline.store.messages())


def test_slack_and_smtp_faults_lose_nothing_and_send_each_once(
    pipeline: Pipeline, slack: SlackApi, smtp: SmtpServer
) -> None:
    slack.fail(
        "chat.postMessage",
        Fault(status=500),
        Fault(status=429, retry_after=120),
        Fault(delay=2.5),  # longer than the channel's 1 s timeout
        Fault(status=503),
    )
    smtp.stop()  # the relay refuses connections for a while
    pipeline.observe(3.9)
    pipeline.observe(6.2)

    def relay_back(number: int) -> None:
        if number == 3:
            smtp.restart()

    pipeline.deliver_until_settled(rounds=20, between=relay_back)

    posts = _delivered_posts(slack)
    assert len(posts) == 2  # status change + escalation, each once
    assert posts[1]["thread_ts"] == posts[0]["ts"]
    assert len(slack.posts()) == 6  # four failed attempts, two deliveries
    assert len(smtp.messages) == 2
    messages = pipeline.store.messages()
    assert all(m.state is DeliveryState.SENT for m in messages)
    assert max(m.attempts for m in messages if m.channel == "slack") >= 3
