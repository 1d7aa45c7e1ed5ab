"""Reminders end to end, in process: a Runner with a fixed clock on a real SQLite store,
the outbox delivering to the fake Slack Web API and a local SMTP server."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from channels import real_channels
from slack_api import SlackApi
from smtp_server import SmtpServer

from kpiwatch.config.loader import load_rule_text
from kpiwatch.evaluation import ReminderPolicy
from kpiwatch.model import DeliveryState, EventKind
from kpiwatch.notify.notices import NoticeBuilder
from kpiwatch.notify.outbox import Outbox
from kpiwatch.notify.routing import Router
from kpiwatch.notify.suppression import Suppressor
from kpiwatch.runtime.runner import Runner
from kpiwatch.runtime.workspace import Workspace
from kpiwatch.store.repository import Store
from kpiwatch.testing import FakeSource, FixedClock
from kpiwatch.web.metrics import Metrics

RULES = """
sources: {wh: {type: sql, url: "sqlite://"}}
teams: {cs: {slack: "#cs-kpis"}}
kpis:
  - id: churn
    name: Churn
    owner: dana@example.com
    team: cs
    unit: "%"
    direction: lower_is_better
    source: wh
    query: SELECT 1
    thresholds: {yellow: 4.5, red: 5.5}
"""
# muted all of March 3rd (UTC): where the first reminder falls
MUTED = RULES + '    mute: [{cron: "0 0 3 3 *", for: 1d, comment: release freeze}]\n'
START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
DAY = timedelta(days=1)
UTC_TZ = ZoneInfo("UTC")


class Pipeline:
    """The daemon's evaluation, reminder tick and delivery, with a clock we move."""

    def __init__(self, tmp: Path, slack: SlackApi, smtp: SmtpServer, rules: str) -> None:
        self.clock = FixedClock(START)
        self.store = Store.open(f"sqlite:///{tmp}/state.db")
        self.source = FakeSource("wh")
        loaded = load_rule_text(rules, "rules.yaml")
        channels = real_channels(self.store, slack, smtp)
        router = Router(loaded.rules, channels=frozenset(channels))
        self.runner = Runner(
            self.store, self.clock, Workspace(loaded, {"wh": self.source}, router),
            tz=UTC_TZ, review_time=time(9, 0), reminders=ReminderPolicy(),
        )  # fmt: skip
        self.metrics = Metrics(channels)
        self.runner.on_reminded = self.metrics.reminded
        ticks = itertools.count(step=10.0)  # each send 10 s after the last: pacing never waits
        self.outbox = Outbox(
            self.store, channels, self.clock,
            NoticeBuilder(self.store, lambda: loaded.rules, "http://kpiwatch.test"),
            suppress=Suppressor(self.store, UTC_TZ).during, monotonic=lambda: next(ticks),
        )  # fmt: skip

    def observe(self, value: float) -> datetime:
        self.clock.advance(timedelta(hours=1))
        self.source.set("churn", value)
        self.runner.evaluate_kpi("churn")
        self.deliver()
        return self.clock.now()

    def remind_at(self, moment: datetime) -> int:
        """Tick reminders at ``moment`` and deliver what they queued; how many were told."""
        self.clock.set(moment)
        told = self.runner.tick_reminders()
        self.deliver()
        return told

    def deliver(self) -> None:
        for _ in range(5):  # bounded: every message here goes out on its first attempt
            self.outbox.deliver_due()
            if not self.store.messages(states=[DeliveryState.PENDING]):
                return
        raise AssertionError("messages still pending")

    def reminder_rows(self) -> list[tuple[str, str, str, str]]:
        """(event key, channel, target, delivery state) of every reminder's outbox row."""
        return [
            (m.event.key, m.channel, m.target, m.state.value)
            for m in sorted(self.store.messages(), key=lambda m: m.id)
            if m.event.kind is EventKind.REMINDER
        ]


@pytest.fixture
def pipeline(tmp_path: Path, slack: SlackApi, smtp: SmtpServer) -> Iterator[Pipeline]:
    made = Pipeline(tmp_path, slack, smtp, RULES)
    yield made
    made.store.close()


def _reminder_posts(slack: SlackApi) -> list[dict[str, Any]]:
    return [p for p in slack.posts() if p["text"].startswith("⏰")]


def _parent(slack: SlackApi) -> dict[str, Any]:
    [red] = [p for p in slack.posts() if p["text"].startswith("🔴")]
    return red


def _rows(since: datetime, numbers: range | list[int], state: str = "sent") -> list[Any]:
    return [
        row
        for n in numbers
        for row in (
            (f"churn:reminder:{since.isoformat()}:{n}", "slack", "#cs-kpis", state),
            (f"churn:reminder:{since.isoformat()}:{n}", "email", "dana@example.com", state),
        )
    ]


def test_a_red_kpi_is_reminded_with_backoff_in_its_episode_thread(
    pipeline: Pipeline, slack: SlackApi, smtp: SmtpServer
) -> None:
    pipeline.observe(3.9)
    since = pipeline.observe(6.2)  # red: the episode's thread opens
    emails_before = len(smtp.messages)
    assert pipeline.remind_at(since + DAY - timedelta(minutes=1)) == 0
    told = [pipeline.remind_at(since + d * DAY) for d in (1, 2, 3, 5, 7, 13, 14, 21, 28)]
    assert told == [1, 0, 1, 0, 1, 0, 1, 1, 1]  # +1d, +3d, +7d, then every 7d
    assert pipeline.remind_at(since + 28 * DAY + timedelta(hours=1)) == 0  # a retried tick

    assert pipeline.reminder_rows() == _rows(since, range(1, 7))
    parent = _parent(slack)
    posts = _reminder_posts(slack)
    assert [p["thread_ts"] for p in posts] == [parent["ts"]] * 6
    assert [p["channel"] for p in posts] == ["#cs-kpis"] * 6
    ages = ["1d", "3d", "1w", "2w", "3w", "4w"]
    assert [p["text"].split(" — ")[0] for p in posts] == [
        f"⏰ Churn is still red (since {age}): 6.2 %" for age in ages
    ]
    assert all(" — not acknowledged — value 6.2 % &gt; red 5.5 %" in p["text"] for p in posts)
    summary = posts[0]["blocks"][1]["text"]["text"]
    assert summary == (
        "⏰ *Churn* is *still red* after 1d and nobody has acknowledged it. "
        "Acknowledge to stop the reminders: `kpiwatch ack churn --comment '…'`"
    )
    # the parent shows where the episode stands
    assert slack.updates()[-1]["blocks"][1]["text"]["text"] == (
        "*Now:* ⏰ reminded 2026-03-30 10:00 UTC: not acknowledged after 4w"
    )

    emails = smtp.messages[emails_before:]
    assert [m["To"] for m in emails] == ["dana@example.com"] * 6
    assert str(emails[0]["Subject"]) == (
        "[kpiwatch] ⏰ Churn is still red (since 1d): 6.2 % — not acknowledged"
    )
    body = emails[0].get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert "nobody has acknowledged it (reminder 1)" in text
    assert "kpiwatch ack churn --comment '…'" in text
    assert pipeline.metrics.reminders() == {"red": 6}
    assert pipeline.store.get_state("churn").reminders_sent == 6  # type: ignore[union-attr]


def test_no_reminder_once_the_episode_is_acknowledged(
    pipeline: Pipeline, slack: SlackApi
) -> None:
    pipeline.observe(3.9)
    since = pipeline.observe(6.2)
    assert pipeline.remind_at(since + DAY) == 1
    pipeline.store.ack("churn", since, "dana", "on it", since + DAY + timedelta(hours=2))
    assert [pipeline.remind_at(since + d * DAY) for d in (3, 7, 14, 60)] == [0, 0, 0, 0]
    assert pipeline.reminder_rows() == _rows(since, [1])
    assert len(_reminder_posts(slack)) == 1


def test_recovery_ends_the_reminders_and_a_new_episode_starts_its_own_schedule(
    pipeline: Pipeline, slack: SlackApi
) -> None:
    pipeline.observe(3.9)
    first = pipeline.observe(6.2)
    assert pipeline.remind_at(first + DAY) == 1
    pipeline.observe(3.8)  # green: a new episode
    assert [pipeline.remind_at(first + d * DAY) for d in (3, 7, 14)] == [0, 0, 0]
    second = pipeline.observe(6.4)  # red again: counted from its own start
    assert pipeline.remind_at(second + DAY - timedelta(minutes=1)) == 0
    assert pipeline.remind_at(second + DAY) == 1
    assert pipeline.reminder_rows() == _rows(first, [1]) + _rows(second, [1])
    parents = [p for p in slack.posts() if p["text"].startswith("🔴")]
    assert [p["thread_ts"] for p in _reminder_posts(slack)] == [p["ts"] for p in parents]


def test_a_reminder_in_a_mute_window_is_recorded_not_sent_and_the_schedule_moves_on(
    tmp_path: Path, slack: SlackApi, smtp: SmtpServer
) -> None:
    pipeline = Pipeline(tmp_path, slack, smtp, MUTED)
    try:
        pipeline.observe(3.9)
        since = pipeline.observe(6.2)  # 2026-03-02 10:00: the first reminder is due in the mute
        emails_before = len(smtp.messages)
        assert pipeline.remind_at(since + DAY) == 1
        assert _reminder_posts(slack) == []
        assert pipeline.remind_at(since + 2 * DAY) == 0  # no catching up after the window
        assert pipeline.remind_at(since + 3 * DAY) == 1  # the second, on its own time
        assert pipeline.reminder_rows() == _rows(since, [1], "suppressed") + _rows(since, [2])
        assert [p["text"].split(":")[0] for p in _reminder_posts(slack)] == [
            "⏰ Churn is still red (since 3d)"
        ]
        assert len(smtp.messages) - emails_before == 1
        assert pipeline.metrics.reminders() == {"red": 2}
    finally:
        pipeline.store.close()


def test_a_team_opts_its_yellow_kpis_in_and_sets_its_own_schedule(
    tmp_path: Path, slack: SlackApi, smtp: SmtpServer
) -> None:
    team = 'cs: {slack: "#cs-kpis", reminders: {yellow: true, first: 2h}}'
    rules = RULES.replace('cs: {slack: "#cs-kpis"}', team)
    pipeline = Pipeline(tmp_path, slack, smtp, rules)
    try:
        pipeline.observe(3.9)
        since = pipeline.observe(5.0)  # yellow
        emails_before = len(smtp.messages)
        assert pipeline.remind_at(since + timedelta(hours=2)) == 1
        assert pipeline.reminder_rows() == [
            (f"churn:reminder:{since.isoformat()}:1", "slack", "#cs-kpis", "sent")
        ]  # yellow: the channel only, as a change to yellow
        [post] = _reminder_posts(slack)
        assert post["text"].startswith("⏰ Churn is still yellow (since 2h): 5 %")
        assert len(smtp.messages) == emails_before
    finally:
        pipeline.store.close()
