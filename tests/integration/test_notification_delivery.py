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
from channels import real_channels
from slack_api import Fault, SlackApi
from smtp_server import SmtpServer

from kpiwatch.config.loader import load_rule_text
from kpiwatch.model import DeliveryState
from kpiwatch.notify.notices import NoticeBuilder
from kpiwatch.notify.outbox import Outbox
from kpiwatch.notify.routing import Router
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

    def __init__(self, tmp: Path, slack: SlackApi, smtp: SmtpServer, rules: str = RULES) -> None:
        self.clock = FixedClock(START)
        self.store = Store.open(f"sqlite:///{tmp}/state.db")
        self.source = FakeSource("wh")
        loaded = load_rule_text(rules, "rules.yaml")
        channels = real_channels(self.store, slack, smtp)
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
    pipeline.observe(3.8)  # green again: the red episode's thread hears it, and the channel
    pipeline.deliver_until_settled()

    red, escalated, green = _delivered_posts(slack)
    assert red["channel"] == "#cs-kpis"
    assert "thread_ts" not in red or not red["thread_ts"]
    assert escalated["thread_ts"] == red["ts"]
    assert green["thread_ts"] == red["ts"]
    assert green["reply_broadcast"] is True
    edits = slack.updates()
    assert [e["ts"] for e in edits] == [red["ts"]] * 2  # escalated, then resolved after 2h
    assert edits[-1]["blocks"][1]["text"]["text"] == "*Now:* ✅ *resolved* after 2h"
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


STABLE_AFTER_TWO = RULES.replace(
    "    thresholds: {yellow: 4.5, red: 5.5}\n",
    "    thresholds: {yellow: 4.5, red: 5.5}\n    escalation: {stable_for: 2}\n",
)


def _plain(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    return str(body.get_content())


def _html(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("html",))
    assert body is not None
    return str(body.get_content())


def _late_stable_again(tmp: Path, slack: SlackApi, smtp: SmtpServer) -> list[EmailMessage]:
    """The de-escalation is queued, the KPI turns red before it is delivered, then it is
    delivered: the bug of a "stable again" email showing the KPI as RED. The emails
    sent by that last delivery."""
    pipeline = Pipeline(tmp, slack, smtp, STABLE_AFTER_TWO)
    try:
        pipeline.observe(3.9)
        pipeline.observe(6.2)  # red, escalated
        pipeline.observe(3.8)  # green: the recovery
        pipeline.deliver_until_settled()
        sent_before = len(smtp.messages)
        pipeline.observe(3.7)  # green twice in a row: stable again (queued, not delivered)
        pipeline.observe(6.4)  # red again before that message goes out
        pipeline.deliver_until_settled()
    finally:
        pipeline.store.close()
    return smtp.messages[sent_before:]


def test_a_late_stable_again_slack_message_tells_its_event_not_the_state_at_send_time(
    tmp_path: Path, slack: SlackApi, smtp: SmtpServer
) -> None:
    _late_stable_again(tmp_path, slack, smtp)
    [stable] = [p for p in _delivered_posts(slack) if "stable again" in p["text"]]
    assert stable["blocks"][0]["text"]["text"] == "✅ Green · &lt;!channel&gt; churn &amp; co"
    fields = str(stable["blocks"])
    assert "*Value*\\n3.7 %" in fields
    assert "value 3.7 % within thresholds" in fields
    assert "⏱ now: red 6.4 % (value 6.4 % &gt; red 5.5 %)" in fields
    assert "Red since" not in fields


def test_a_late_stable_again_email_tells_its_event_not_the_state_at_send_time(
    tmp_path: Path, slack: SlackApi, smtp: SmtpServer
) -> None:
    late = _late_stable_again(tmp_path, slack, smtp)
    [email] = [m for m in late if "stable again" in str(m["Subject"])]
    text = _plain(email)
    assert "churn & co: GREEN, 3.7 %" in text
    assert "RED" not in text
    assert "now: red 6.4 % (value 6.4 % > red 5.5 %)" in text
    assert "now: red 6.4 % (value 6.4 % &gt; red 5.5 %)" in _html(email)


def test_a_red_message_delivered_after_the_recovery_says_resolved_since(
    pipeline: Pipeline, slack: SlackApi, smtp: SmtpServer
) -> None:
    pipeline.observe(3.9)
    pipeline.observe(6.2)  # red, escalated: both queued
    pipeline.observe(3.8)  # green before anything was delivered
    pipeline.deliver_until_settled()

    red, escalated, green = _delivered_posts(slack)
    resolved = f"resolved since {(START + timedelta(hours=3)):%Y-%m-%d %H:%M} UTC"
    for post in (red, escalated):
        assert post["blocks"][0]["text"]["text"].startswith("🔴 Red")
        assert resolved in str(post["blocks"])
    assert resolved not in str(green["blocks"])  # on time: nothing changed since
    assert "now:" not in str(green["blocks"])
    for email in smtp.messages:  # the red change and the escalation, to the owner
        assert "churn & co: RED, 6.2 %" in _plain(email)
        assert resolved in _plain(email)
        assert "now: green 3.8 %" in _plain(email)


def test_a_failed_parent_edit_loses_and_repeats_nothing(
    pipeline: Pipeline, slack: SlackApi
) -> None:
    slack.fail("chat.update", Fault(status=429, retry_after=60), Fault(status=500))
    pipeline.observe(3.9)
    pipeline.observe(6.2)  # red + escalated: the escalation's edit is rate limited
    pipeline.observe(3.8)  # the recovery's edit fails too
    pipeline.deliver_until_settled()

    assert len(_delivered_posts(slack)) == len(slack.posts()) == 3  # each once, first time
    assert len(slack.updates()) == 2
    slack_rows = [m for m in pipeline.store.messages() if m.channel == "slack"]
    # sent at the first attempt each: the failed edits made no retry
    assert [(m.state, m.attempts) for m in slack_rows] == [(DeliveryState.SENT, 1)] * 3
