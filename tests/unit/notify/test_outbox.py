"""The outbox on a real SQLite store: sends once, backs off, goes dead, honours Retry-After."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from kpiwatch.config.loader import load_rule_text
from kpiwatch.config.rules import RuleSet
from kpiwatch.errors import DeliveryError
from kpiwatch.model import (
    Delivery,
    DeliveryState,
    Evaluation,
    Event,
    EventKind,
    KpiState,
    MatcherKind,
    ReviewCadence,
    Silence,
    Status,
)
from kpiwatch.notify.notices import NoticeBuilder
from kpiwatch.notify.outbox import Outbox, RetryPolicy
from kpiwatch.notify.suppression import Suppressor
from kpiwatch.store.repository import Store
from kpiwatch.testing import FixedClock, RecordingChannel

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    opened = Store.open(f"sqlite:///{tmp_path}/outbox.db")
    yield opened  # type: ignore[misc]
    opened.close()


def _queue(
    store: Store, key: str = "e1", channel: str = "log", kpi: str = "k", target: str = "#x"
) -> None:
    event = Event(EventKind.STATUS_CHANGED, key, START, kpi_id=kpi, data={"to": "red"})
    state = KpiState(kpi, Status.RED, START, ReviewCadence.WEEKLY, last_evaluated=START)
    evaluation = Evaluation(kpi, START, 6.0, START, Status.RED, (), state, (event,))
    store.save_evaluation(evaluation, {key: [Delivery(channel, target)]})


def _outbox(
    store: Store, channels: dict[str, Any], clock: FixedClock, *args: Any, **kwargs: Any
) -> Outbox:
    """An outbox with no rules loaded (the events' KPIs are unknown to it)."""
    notices = NoticeBuilder(store, RuleSet, "http://kpiwatch.test")
    return Outbox(store, channels, clock, notices, *args, **kwargs)


def test_a_due_message_is_sent_once(store: Store) -> None:
    clock, channel = FixedClock(START), RecordingChannel()
    _queue(store)
    outbox = _outbox(store, {"log": channel}, clock)
    assert outbox.deliver_due() == 1
    assert outbox.deliver_due() == 0
    assert [m.event.key for m in channel.sent] == ["e1"]
    assert store.messages(states=[DeliveryState.SENT])[0].sent_at == START


def test_retryable_failure_backs_off_then_succeeds(store: Store) -> None:
    clock, channel = FixedClock(START), RecordingChannel()
    channel.fail_with(lambda m: DeliveryError("500", channel="log", retryable=True))
    _queue(store)
    outbox = _outbox(
        store,
        {"log": channel},
        clock,
        policy=RetryPolicy(first_delay=timedelta(seconds=10)),
        rng=random.Random(1),
    )
    assert outbox.deliver_due() == 0
    message = store.messages()[0]
    assert message.attempts == 1
    assert message.state is DeliveryState.PENDING
    assert START + timedelta(seconds=5) <= message.next_attempt_at <= START + timedelta(seconds=20)
    assert outbox.deliver_due() == 0  # not due yet: nothing sent, no extra attempt
    assert store.messages()[0].attempts == 1
    channel.fail_with(None)
    clock.set(message.next_attempt_at)
    assert outbox.deliver_due() == 1
    assert len(channel.sent) == 1


def test_retry_after_is_a_floor_for_the_next_attempt(store: Store) -> None:
    clock, channel = FixedClock(START), RecordingChannel()
    channel.fail_with(
        lambda m: DeliveryError("429", channel="log", retryable=True, retry_after=120)
    )
    _queue(store)
    _outbox(store, {"log": channel}, clock).deliver_due()
    assert store.messages()[0].next_attempt_at >= START + timedelta(seconds=120)


def test_permanent_failure_is_dead_at_once_and_never_silently_dropped(store: Store) -> None:
    clock, channel = FixedClock(START), RecordingChannel()
    channel.fail_with(lambda m: DeliveryError("channel_not_found", channel="log", retryable=False))
    _queue(store)
    _outbox(store, {"log": channel}, clock).deliver_due()
    [dead] = store.messages(states=[DeliveryState.DEAD])
    assert dead.last_error is not None
    assert "channel_not_found" in dead.last_error


def test_budget_spent_makes_a_message_dead(store: Store) -> None:
    clock, channel = FixedClock(START), RecordingChannel()
    channel.fail_with(lambda m: DeliveryError("timeout", channel="log", retryable=True))
    _queue(store)
    outbox = _outbox(
        store,
        {"log": channel},
        clock,
        policy=RetryPolicy(first_delay=timedelta(minutes=10), budget=timedelta(minutes=30)),
    )
    for _ in range(10):
        pending = store.messages(states=[DeliveryState.PENDING])
        if not pending:
            break
        clock.set(max(clock.now(), pending[0].next_attempt_at))
        outbox.deliver_due()
    [dead] = store.messages(states=[DeliveryState.DEAD])
    assert 2 <= dead.attempts <= 5
    assert channel.sent == []


def test_a_message_for_an_unconfigured_channel_is_dead_with_a_reason(store: Store) -> None:
    _queue(store, channel="slack")
    _outbox(store, {"log": RecordingChannel()}, FixedClock(START)).deliver_due()
    [dead] = store.messages(states=[DeliveryState.DEAD])
    assert dead.last_error == "channel 'slack' is not configured"


def test_a_suppressed_message_is_recorded_not_sent(store: Store) -> None:
    clock, channel = FixedClock(START), RecordingChannel()
    _queue(store)
    outbox = _outbox(
        store, {"log": channel}, clock, suppress=lambda now: lambda n: "silenced by #1"
    )
    assert outbox.deliver_due() == 0
    assert channel.sent == []
    [held] = store.messages(states=[DeliveryState.SUPPRESSED])
    assert held.last_error == "silenced by #1"


def test_each_slack_channel_is_paced_to_one_message_a_second(store: Store) -> None:
    clock, channel = FixedClock(START), RecordingChannel("slack")
    for key in ("a", "b", "c"):  # three KPIs, one Slack channel
        _queue(store, key=key, channel="slack", kpi=f"kpi_{key}")
    _queue(store, key="elsewhere", channel="slack", kpi="kpi_d", target="#y")
    tick = [100.0]
    outbox = _outbox(store, {"slack": channel}, clock, monotonic=lambda: tick[0])
    assert outbox.deliver_due() == 2  # a, and elsewhere: another channel is not held up
    tick[0] = 100.5
    assert outbox.deliver_due() == 0  # same channel within a second: b and c wait
    tick[0] = 100.95  # a tick a few ms early still counts as a second later
    assert outbox.deliver_due() == 1
    assert outbox.deliver_due() == 0
    tick[0] = 102.0
    assert outbox.deliver_due() == 1
    keys = [n.event.key for n in channel.sent]
    assert sorted(keys[:2]) == ["a", "elsewhere"]  # side by side: either may be first
    assert keys[2:] == ["b", "c"]
    assert store.due_messages(START) == []


def test_pacing_forgets_a_recipient_once_its_slot_has_passed(store: Store) -> None:
    clock, channel = FixedClock(START), RecordingChannel("slack")
    for i in range(5):  # five Slack channels, one message each
        _queue(store, key=f"e{i}", channel="slack", kpi=f"kpi_{i}", target=f"#c{i}")
    tick = [100.0]
    outbox = _outbox(store, {"slack": channel}, clock, monotonic=lambda: tick[0])
    assert outbox.deliver_due() == 5
    assert len(outbox._next_slot) == 5  # each paced until 101.0
    _queue(store, key="again", channel="slack", kpi="kpi_0", target="#c0")
    tick[0] = 100.5
    assert outbox.deliver_due() == 0  # #c0 still paced: remembered
    assert len(outbox._next_slot) == 5
    tick[0] = 101.5
    assert outbox.deliver_due() == 1
    # the slots of the other four passed: forgotten (the dict held every target ever sent to)
    assert list(outbox._next_slot) == [("slack", "#c0")]
    tick[0] = 103.0
    assert outbox.deliver_due() == 0
    assert outbox._next_slot == {}


class BatchRecorder(RecordingChannel):
    def __init__(self) -> None:
        super().__init__("email")
        self.batches: list[list[str]] = []

    def send_batch(self, notices: Any) -> None:
        self.batches.append([n.event.key for n in notices])


def test_reviews_for_one_owner_go_out_as_one_email(store: Store) -> None:
    for key in ("r1", "r2"):
        event = Event(EventKind.REVIEW_DUE, key, START, kpi_id="k", data={"cadence": "weekly"})
        state = KpiState("k", Status.GREEN, START, ReviewCadence.WEEKLY)
        store.save_state(state, [event], {key: [Delivery("email", "dana@example.com")]})
    channel = BatchRecorder()
    assert _outbox(store, {"email": channel}, FixedClock(START)).deliver_due() == 2
    assert channel.batches == [["r1", "r2"]]
    assert len(store.messages(states=[DeliveryState.SENT])) == 2


def test_a_conversation_stays_in_order_while_its_first_message_is_retried(store: Store) -> None:
    clock, channel = FixedClock(START), RecordingChannel()
    channel.fail_with(lambda n: DeliveryError("500", channel="log", retryable=True)
                      if n.event.key == "first" else None)  # fmt: skip
    _queue(store, key="first")
    _queue(store, key="second")  # same KPI, same recipient
    _queue(store, key="other", kpi="another")
    outbox = _outbox(store, {"log": channel}, clock)
    assert outbox.deliver_due() == 1
    assert [n.event.key for n in channel.sent] == ["other"]  # "second" waits for "first"
    channel.fail_with(None)
    clock.set(max(m.next_attempt_at for m in store.messages(states=[DeliveryState.PENDING])))
    outbox.deliver_due()
    outbox.deliver_due()
    assert [n.event.key for n in channel.sent] == ["other", "first", "second"]


def test_a_pass_starts_no_send_that_could_outlive_its_claim_and_releases_the_rest(
    store: Store,
) -> None:
    clock, tick = FixedClock(START), [100.0]

    class SlowChannel(RecordingChannel):
        def send(self, notice: Any) -> None:
            super().send(notice)
            tick[0] += 20.0  # a slow relay: 20 s a message, the lease is 60 s

    channel = SlowChannel()
    for key in ("a", "b", "c"):  # three KPIs to one recipient: one lane
        _queue(store, key=key, kpi=f"kpi_{key}")
    outbox = _outbox(store, {"log": channel}, clock, monotonic=lambda: tick[0],
                     lease=timedelta(seconds=60), holder="me")  # fmt: skip
    # a and b start within half the lease (30 s); c would start at 140 s: it waits
    assert outbox.deliver_due() == 2
    [waiting] = store.messages(states=[DeliveryState.PENDING])
    assert waiting.event.key == "c"
    # released at once, not left claimed for a lease: another replica may take it now
    taken = store.claim_due_messages("other", now=START, lease=timedelta(seconds=60))
    assert [m.id for m in taken] == [waiting.id]


def test_a_live_replicas_claim_is_left_alone_and_a_killed_ones_taken_over(store: Store) -> None:
    clock, channel = FixedClock(START), RecordingChannel()
    _queue(store, key="first", kpi="k1")
    _queue(store, key="second", kpi="k2")
    lease = timedelta(minutes=5)
    [live] = store.claim_due_messages("live-replica", now=START, lease=lease, limit=1)
    [killed] = store.claim_due_messages("killed-replica", now=START, lease=timedelta(0), limit=1)
    assert (live.event.key, killed.event.key) == ("first", "second")
    outbox = _outbox(store, {"log": channel}, clock)
    assert outbox.deliver_due() == 1  # the killed replica's lease has ended; the live one's not
    assert [n.event.key for n in channel.sent] == ["second"]
    store.release_claims("live-replica", [live.id])
    assert outbox.deliver_due() == 1
    assert [n.event.key for n in channel.sent] == ["second", "first"]


SILENCE_RULES = """
sources: {wh: {type: sql, url: "sqlite://"}}
kpis:
""" + "".join(
    f"  - {{id: k{i}, name: K{i}, owner: o@example.com, direction: lower_is_better,"
    f" source: wh, query: SELECT 1}}\n"
    for i in range(6)
)


def test_a_pass_reads_the_silences_once_and_a_new_silence_holds_the_next_pass(
    store: Store,
) -> None:
    loaded = load_rule_text(SILENCE_RULES, "rules.yaml")
    clock, channel = FixedClock(START), RecordingChannel()
    for i in range(3):
        _queue(store, key=f"a{i}", kpi=f"k{i}", target=f"#t{i}")
    reads: list[datetime | None] = []
    real_silences = store.silences

    def counted(*, active_at: datetime | None = None) -> list[Silence]:
        reads.append(active_at)
        return real_silences(active_at=active_at)

    store.silences = counted  # type: ignore[method-assign]  # the real read, counted
    suppressor = Suppressor(store, ZoneInfo("UTC"))
    notices = NoticeBuilder(store, lambda: loaded.rules, "http://kpiwatch.test")
    outbox = Outbox(store, {"log": channel}, clock, notices, suppress=suppressor.during)

    assert outbox.deliver_due() == 3
    assert reads == [START]  # one read for the pass's three messages

    # silenced at the same clock reading: the next pass reads again and holds k3 back
    store.add_silence(MatcherKind.KPI, "k3", START, START + timedelta(hours=1),
                      "ann", "deploy", START)  # fmt: skip
    for i in (3, 4):
        _queue(store, key=f"b{i}", kpi=f"k{i}", target=f"#t{i}")
    assert outbox.deliver_due() == 1
    assert reads == [START, START]
    assert [m.event.key for m in channel.sent] == ["a0", "a1", "a2", "b4"]
    [held] = store.messages(states=[DeliveryState.SUPPRESSED])
    assert held.event.key == "b3"
    assert held.last_error is not None
    assert held.last_error.startswith("silenced by #")
