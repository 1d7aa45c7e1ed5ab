"""SlackChannel against a local Slack Web API: messages, threads, webhook, error mapping."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from slack_api import Fault, SlackApi, slack_api

from kpiwatch.config.rules import Kpi
from kpiwatch.errors import DeliveryError
from kpiwatch.model import (
    Ack,
    DeliveryState,
    Event,
    EventKind,
    KpiState,
    Observation,
    OutboxMessage,
    ReviewCadence,
    SlackThread,
    Status,
)
from kpiwatch.notify.channels.slack import SlackChannel
from kpiwatch.notify.notice import Notice

TOKEN = "xoxb-secret-test-token"
AT = datetime(2024, 6, 1, 12, tzinfo=UTC)
KPI = Kpi.model_validate({
    "id": "wau", "name": "Weekly active users", "owner": "alice", "direction": "higher_is_better",
    "source": "push", "unit": "users", "thresholds": {"yellow": 1500, "red": 1000},
})  # fmt: skip


class DictThreads:
    """The ThreadBook of the tests: a dict."""

    def __init__(self) -> None:
        self.threads: dict[tuple[str, str, datetime], SlackThread] = {}

    def get(self, kpi_id: str, channel: str, episode_since: datetime) -> SlackThread | None:
        return self.threads.get((kpi_id, channel, episode_since))

    def put(
        self, kpi_id: str, channel: str, episode_since: datetime, thread: SlackThread
    ) -> None:
        self.threads[(kpi_id, channel, episode_since)] = thread

    def ts(self) -> dict[tuple[str, str, datetime], str]:
        return {key: thread.ts for key, thread in self.threads.items()}


def notice(
    kind: EventKind = EventKind.STATUS_CHANGED,
    *,
    at: datetime = AT,
    since: datetime = AT,
    data: dict[str, Any] | None = None,
    kpi: Kpi | None = KPI,
    source: str | None = None,
    target: str = "#growth",
    state: KpiState | None = None,
    ack: Ack | None = None,
) -> Notice:
    if data is None:
        data = {"from": "yellow", "to": "red", "value": 950.0, "unit": "users",
                "reasons": ["value 950 users < red 1000 users"], "first": False}  # fmt: skip
    kpi_id = None if source else "wau"
    event = Event(kind=kind, key=f"{kind}:{at}", at=at, kpi_id=kpi_id, source=source, data=data)
    if state is None and kpi_id:
        state = KpiState("wau", Status.RED, since, ReviewCadence.WEEKLY)
    message = OutboxMessage(1, event, "slack", target, DeliveryState.PENDING, 0, at, at)
    recent = (Observation("wau", at - timedelta(days=1), 1200.0), Observation("wau", at, 950.0))
    return Notice(
        message, kpi, None, state, recent if kpi_id else (), (), ack, "https://k.example/"
    )


@pytest.fixture
def slack() -> Iterator[SlackApi]:
    with slack_api(TOKEN) as server:
        yield server


@pytest.fixture
def threads() -> DictThreads:
    return DictThreads()


@pytest.fixture
def channel(slack: SlackApi, threads: DictThreads) -> SlackChannel:
    return SlackChannel(
        token=TOKEN, webhook_url=None, api_url=slack.base_url, threads=threads, timeout=2.0
    )


def test_one_message_per_send_with_blocks_text_and_token(
    slack: SlackApi, channel: SlackChannel
) -> None:
    channel.send(notice())
    [call] = slack.calls
    assert call["method"] == "chat.postMessage"
    assert call["authorization"] == f"Bearer {TOKEN}"
    assert call["channel"] == "#growth"
    assert call["text"].startswith("🔴 Weekly active users yellow → red")
    assert call["blocks"][0]["type"] == "header"
    assert call.get("thread_ts") is None
    assert call["unfurl_links"] is False


def test_episode_threads(slack: SlackApi, channel: SlackChannel, threads: DictThreads) -> None:
    channel.send(notice())  # status_changed: top-level, starts the episode
    first_ts = slack.posts()[0]["ts"]
    assert threads.ts() == {("wau", "#growth", AT): first_ts}

    later = AT + timedelta(days=3)
    escalated = {"review": "weekly", "from_review": "monthly", "status": "red", "value": 900,
                 "since": AT.isoformat()}  # fmt: skip
    channel.send(notice(EventKind.ESCALATED, at=later, since=AT, data=escalated))
    assert slack.posts()[1]["thread_ts"] == first_ts

    # another Slack channel has no thread for this episode: top-level there
    channel.send(notice(EventKind.ESCALATED, at=later, since=AT, data=escalated, target="#ops"))
    assert slack.posts()[2].get("thread_ts") is None

    # a change to green recorded without the closed episode's start (older rows): a
    # message of its own, whose thread the green episode's events reply in
    recovered = AT + timedelta(days=9)
    channel.send(notice(at=recovered, since=recovered, data={"from": "red", "to": "green"}))
    second_ts = slack.posts()[3]["ts"]
    assert slack.posts()[3].get("thread_ts") is None
    assert second_ts != first_ts
    due = {"cadence": "weekly", "escalated": True, "status": "green", "value": 1600,
           "since": recovered.isoformat()}  # fmt: skip
    channel.send(notice(EventKind.REVIEW_DUE, at=recovered + timedelta(days=1),
                        since=recovered, data=due))  # fmt: skip
    assert slack.posts()[4]["thread_ts"] == second_ts


def change(
    at: datetime, was: str, to: str, previous: datetime | None, value: float = 950.0
) -> Notice:
    """A status change at ``at`` closing the episode that started at ``previous``."""
    data = {"from": was, "to": to, "value": value, "unit": "users", "first": False,
            "reasons": [f"value {value:g} users"],
            "previous_since": previous.isoformat() if previous else None}  # fmt: skip
    state = KpiState("wau", Status(to), at, ReviewCadence.WEEKLY, value=value)
    return notice(at=at, since=at, data=data, state=state)


def follow_up(
    kind: EventKind, at: datetime, since: datetime, ack: Ack | None = None, **data: Any
) -> Notice:
    """An event of the episode that started at ``since``, sent while it lasts."""
    state = KpiState("wau", Status(data.get("status", "red")), since, ReviewCadence.WEEKLY,
                     value=data.get("value"))  # fmt: skip
    return notice(kind, at=at, since=since, data={"since": since.isoformat(), **data},
                  state=state, ack=ack)  # fmt: skip


def test_an_episode_is_one_conversation(
    slack: SlackApi, channel: SlackChannel, threads: DictThreads
) -> None:
    green_since = AT - timedelta(days=20)
    channel.send(change(AT, "green", "red", green_since))  # the parent
    [parent] = slack.posts()
    assert parent.get("thread_ts") is None
    assert slack.updates() == []  # the green episode had no thread to edit

    channel.send(follow_up(EventKind.ESCALATED, AT + timedelta(days=1), AT, review="weekly",
                           from_review="monthly", status="red", value=900.0))  # fmt: skip
    escalated = slack.posts()[1]
    assert escalated["thread_ts"] == parent["ts"]
    [edit] = slack.updates()
    assert (edit["channel"], edit["ts"]) == ("CGROWTH", parent["ts"])  # the ID, not "#growth"
    assert edit["blocks"][0] == parent["blocks"][0]  # the header stays
    assert edit["blocks"][1]["text"]["text"] == "*Now:* ⏫ *escalated* to weekly reviews"
    assert edit["blocks"][2:] == parent["blocks"][1:]  # the original event text stays
    assert edit["text"].startswith(parent["text"])

    # acks send nothing: the next message of the episode shows it on the parent
    ack = Ack(1, "wau", AT, "dana", "rolling back the price change", AT + timedelta(days=2))
    channel.send(follow_up(EventKind.REVIEW_DUE, AT + timedelta(days=2), AT, cadence="weekly",
                           status="red", value=920.0, ack=ack))  # fmt: skip
    assert slack.posts()[2]["thread_ts"] == parent["ts"]
    acked = slack.updates()[1]["blocks"][1]["text"]["text"]
    assert acked.startswith("*Now:* 📅 weekly review due")
    assert acked.endswith("acknowledged by dana: rolling back the price change")

    recovered_at = AT + timedelta(days=3, hours=4)
    channel.send(change(recovered_at, "red", "green", AT, value=1600.0))
    recovery = slack.posts()[3]
    assert recovery["thread_ts"] == parent["ts"]
    assert recovery["reply_broadcast"] is True  # the channel sees the recovery
    assert recovery["blocks"][0]["text"]["text"] == "✅ Green · Weekly active users"
    resolved = slack.updates()[2]
    assert resolved["ts"] == parent["ts"]
    assert resolved["blocks"][1]["text"]["text"] == "*Now:* ✅ *resolved* after 3d 4h"
    assert "escalated" not in str(resolved["blocks"][1])  # each edit replaces the last line

    # the green episode's de-escalation ends the same story: in the same thread, no edit
    channel.send(follow_up(EventKind.DE_ESCALATED, recovered_at + timedelta(days=14),
                           recovered_at, status="green", value=1700.0, review="monthly",
                           from_review="weekly"))  # fmt: skip
    assert slack.posts()[4]["thread_ts"] == parent["ts"]
    assert slack.posts()[4].get("reply_broadcast") is None
    assert len(slack.updates()) == 3

    # red again: a new episode, a new parent, its follow-ups in its own thread
    again = recovered_at + timedelta(days=20)
    channel.send(change(again, "green", "red", recovered_at))
    second = slack.posts()[5]
    assert second.get("thread_ts") is None
    assert second["ts"] != parent["ts"]
    channel.send(follow_up(EventKind.ESCALATED, again + timedelta(days=1), again,
                           review="weekly", from_review="monthly", status="red", value=900.0))
    assert slack.posts()[6]["thread_ts"] == second["ts"]
    assert slack.updates()[3]["ts"] == second["ts"]
    assert len(slack.posts()) == 7
    assert all(u["ts"] in (parent["ts"], second["ts"]) for u in slack.updates())


def test_yellow_to_red_opens_a_thread_and_says_so_in_the_old_one(
    slack: SlackApi, channel: SlackChannel
) -> None:
    channel.send(change(AT, "green", "yellow", AT - timedelta(days=3), value=1200.0))
    channel.send(change(AT + timedelta(hours=2), "yellow", "red", AT))
    yellow, red = slack.posts()
    assert red.get("thread_ts") is None  # red is an episode of its own
    [edit] = slack.updates()
    assert edit["ts"] == yellow["ts"]
    assert edit["blocks"][1]["text"]["text"] == "*Now:* 🔴 became *red* after 2h (new thread)"


@pytest.mark.parametrize(
    "fault",
    [Fault(status=429, retry_after=30), Fault(status=500), Fault(error="cant_update_message")],
)
def test_a_failed_parent_edit_still_delivers_the_reply_once(
    slack: SlackApi, channel: SlackChannel, fault: Fault
) -> None:
    channel.send(change(AT, "green", "red", None))
    slack.fail("chat.update", fault)
    # no DeliveryError: the outbox marks the reply sent and never posts it again
    channel.send(follow_up(EventKind.ESCALATED, AT + timedelta(days=1), AT, review="weekly",
                           from_review="monthly", status="red", value=900.0))  # fmt: skip
    parent, reply = slack.posts()
    assert reply["thread_ts"] == parent["ts"]
    [failed] = slack.updates()
    assert failed["ts"] == parent["ts"]
    # the next follow-up edits the parent anew
    channel.send(change(AT + timedelta(days=2), "red", "green", AT, value=1600.0))
    assert len(slack.posts()) == 3
    assert "resolved" in slack.updates()[1]["blocks"][1]["text"]["text"]


def test_webhook_slack_posts_every_message_top_level(slack: SlackApi, threads: DictThreads) -> None:
    hook = SlackChannel(token=None, webhook_url=slack.webhook_url, threads=threads, timeout=2)
    hook.send(change(AT, "green", "red", None))
    hook.send(follow_up(EventKind.ESCALATED, AT + timedelta(days=1), AT, review="weekly",
                        from_review="monthly", status="red", value=900.0))  # fmt: skip
    hook.send(change(AT + timedelta(days=2), "red", "green", AT, value=1600.0))
    assert [c["method"] for c in slack.calls] == ["webhook"] * 3
    assert not any("thread_ts" in c or "reply_broadcast" in c for c in slack.calls)
    assert slack.calls[2]["blocks"][0]["text"]["text"] == "✅ Green · Weekly active users"
    assert threads.threads == {}


def test_reply_to_a_deleted_thread_posts_top_level(
    slack: SlackApi, channel: SlackChannel, threads: DictThreads
) -> None:
    threads.put("wau", "#growth", AT, SlackThread("1.000001"))
    slack.fail("chat.postMessage", Fault(error="thread_not_found"))
    channel.send(notice(EventKind.REVIEW_DUE, data={"cadence": "weekly", "status": "red"}))
    first, second = slack.posts()
    assert first["thread_ts"] == "1.000001"
    assert second.get("thread_ts") is None


def test_a_data_incident_renders_without_a_kpi(slack: SlackApi, channel: SlackChannel) -> None:
    channel.send(
        notice(EventKind.DATA_INCIDENT, data={"reason": "connection refused"}, kpi=None,
               source="warehouse", target="#oncall")
    )  # fmt: skip
    [call] = slack.posts()
    assert call["channel"] == "#oncall"
    assert call["blocks"][0]["text"]["text"] == "🚫 Data incident · warehouse"
    assert "connection refused" in call["text"]


def test_hostile_kpi_name_reaches_slack_escaped(slack: SlackApi, channel: SlackChannel) -> None:
    hostile = KPI.model_copy(update={"name": "<!channel> R&D > plan"})
    data = {"from": "yellow", "to": "red", "value": 1, "reasons": ["<!here> & >"]}
    channel.send(notice(kpi=hostile, data=data))
    [call] = slack.posts()
    assert "<!" not in str(call["blocks"])
    assert "<!" not in call["text"]
    assert "&lt;!channel&gt; R&amp;D &gt; plan" in call["blocks"][0]["text"]["text"]


def test_limits_hold_on_the_wire(slack: SlackApi, channel: SlackChannel) -> None:
    data = {"from": "yellow", "to": "red", "value": 1, "reasons": ["why " * 400] * 50}
    channel.send(notice(data=data))
    [call] = slack.posts()
    assert len(call["blocks"]) <= 50
    assert all(len(b["text"]["text"]) <= 3000 for b in call["blocks"] if b["type"] == "section"
               and "text" in b)  # fmt: skip
    assert len(call["text"]) <= 4000


@pytest.mark.parametrize(
    ("fault", "retryable", "retry_after", "message"),
    [
        (Fault(status=500), True, None, "HTTP 500"),
        (Fault(status=503), True, None, "HTTP 503"),
        (Fault(status=429, retry_after=7), True, 7.0, "rate limited"),
        (Fault(error="ratelimited"), True, None, "rate limited"),
        (Fault(error="channel_not_found"), False, None, "channel_not_found (invite"),
        (Fault(error="not_in_channel"), False, None, "not_in_channel"),
        (Fault(error="is_archived"), False, None, "is_archived"),
        (Fault(error="invalid_blocks"), False, None, "invalid_blocks"),
        (Fault(error="msg_too_long"), False, None, "msg_too_long"),
        (Fault(error="invalid_auth"), False, None, "KPIWATCH_SLACK_TOKEN"),
        (Fault(status=400, error="invalid_arguments"), False, None, "invalid_arguments"),
    ],
)
def test_error_mapping(
    slack: SlackApi,
    channel: SlackChannel,
    fault: Fault,
    retryable: bool,
    retry_after: float | None,
    message: str,
) -> None:
    slack.fail("chat.postMessage", fault)
    with pytest.raises(DeliveryError) as info:
        channel.send(notice())
    error = info.value
    assert (error.retryable, error.retry_after, error.channel) == (retryable, retry_after, "slack")
    assert message in str(error)
    assert TOKEN not in str(error)
    assert len(slack.calls) == 1  # slack-sdk did not retry on its own


def test_timeout_is_retryable(slack: SlackApi, threads: DictThreads) -> None:
    quick = SlackChannel(
        token=TOKEN, webhook_url=None, api_url=slack.base_url, threads=threads, timeout=0.3
    )
    slack.fail("chat.postMessage", Fault(delay=3))
    started = time.monotonic()
    with pytest.raises(DeliveryError, match="timed out") as info:
        quick.send(notice())
    assert info.value.retryable
    assert time.monotonic() - started < 2
    assert len(slack.calls) == 1


def test_connection_refused_is_retryable(threads: DictThreads) -> None:
    with slack_api(TOKEN) as gone:
        url = gone.base_url
    dead = SlackChannel(token=TOKEN, webhook_url=None, api_url=url, threads=threads, timeout=1)
    with pytest.raises(DeliveryError) as info:
        dead.send(notice())
    assert info.value.retryable
    assert TOKEN not in str(info.value)


def test_verify(slack: SlackApi, channel: SlackChannel, threads: DictThreads) -> None:
    assert channel.verify() == "Acme (as kpiwatch)"
    assert slack.calls[0]["method"] == "auth.test"
    wrong = SlackChannel(token="xoxb-wrong-token", webhook_url=None, api_url=slack.base_url,
                         threads=threads)  # fmt: skip
    with pytest.raises(DeliveryError, match=r"token was refused \(invalid_auth\)") as info:
        wrong.verify()
    assert not info.value.retryable
    assert "xoxb-wrong-token" not in str(info.value)


def test_webhook_mode(slack: SlackApi, threads: DictThreads) -> None:
    hook = SlackChannel(token=None, webhook_url=slack.webhook_url, threads=threads, timeout=2)
    assert hook.verify() == "webhook"
    hook.send(notice())
    hook.send(notice(EventKind.REVIEW_DUE, data={"cadence": "weekly", "status": "red"}))
    first, second = slack.calls
    assert first["method"] == second["method"] == "webhook"
    assert first["authorization"] is None
    assert first["text"].startswith("🔴 Weekly active users")
    assert first["blocks"][0]["type"] == "header"
    assert "channel" not in first
    assert "thread_ts" not in second
    assert threads.threads == {}


@pytest.mark.parametrize(
    ("fault", "retryable", "retry_after"),
    [
        (Fault(status=500), True, None),
        (Fault(status=429, retry_after=3), True, 3.0),
        (Fault(status=404, error="no_service"), False, None),
        (Fault(status=410, error="channel_is_archived"), False, None),
    ],
)
def test_webhook_errors(
    slack: SlackApi,
    threads: DictThreads,
    fault: Fault,
    retryable: bool,
    retry_after: float | None,
) -> None:
    hook = SlackChannel(token=None, webhook_url=slack.webhook_url, threads=threads, timeout=2)
    slack.fail("webhook", fault)
    with pytest.raises(DeliveryError) as info:
        hook.send(notice())
    assert (info.value.retryable, info.value.retry_after) == (retryable, retry_after)
    assert "/services/" not in str(info.value)  # the webhook URL is a secret
    assert len(slack.calls) == 1


def test_exactly_one_of_token_or_webhook(threads: DictThreads) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        SlackChannel(token=None, webhook_url=None, threads=threads)
    with pytest.raises(ValueError, match="exactly one"):
        SlackChannel(token="t", webhook_url="https://h", threads=threads)
