"""Outbox claims on SQLite, PostgreSQL and MariaDB: each row worked on by one replica at
a time, a conversation in order, expired claims taken over, claims ended by mark_*."""

from __future__ import annotations

import contextlib
import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from kpiwatch.model import Delivery, Event, EventKind, KpiState, ReviewCadence, Status
from kpiwatch.store import Store
from kpiwatch.store.schema import outbox as outbox_t

T0 = datetime(2024, 3, 1, 9, 30, 15, 123456, tzinfo=UTC)
NOW = T0 + timedelta(minutes=1)
LEASE = timedelta(seconds=60)
SLACK = Delivery("slack", "#kpis")
EMAIL = Delivery("email", "sam@example.com")


def _queue(store: Store, kpi: str, keys: list[str], deliveries: list[Delivery]) -> list[int]:
    """Events ``keys`` (oldest first) about ``kpi``, each to ``deliveries``; their row ids."""
    state = KpiState(kpi, Status.RED, since=T0, review=ReviewCadence.WEEKLY)
    events = [Event(EventKind.STATUS_CHANGED, key, T0, kpi_id=kpi) for key in keys]
    store.save_state(state, events, dict.fromkeys(keys, deliveries))
    with store.engine.connect() as connection:
        query = (
            sa.select(outbox_t.c.id)
            .where(outbox_t.c.id > sa.literal(0))
            .order_by(outbox_t.c.id.desc())
            .limit(len(keys) * len(deliveries))
        )
        return sorted(connection.execute(query).scalars())


def _claims(store: Store) -> dict[int, tuple[str | None, datetime | None]]:
    query = sa.select(outbox_t.c.id, outbox_t.c.claimed_by, outbox_t.c.claimed_until)
    with store.engine.connect() as connection:
        return {row.id: (row.claimed_by, row.claimed_until) for row in connection.execute(query)}


def _db_now(store: Store) -> datetime:
    from kpiwatch.store.dbtime import utc_now

    with store.engine.connect() as connection:
        value: datetime = connection.execute(sa.select(utc_now())).scalar_one()
    return value


def test_a_claim_takes_due_messages_in_order_and_a_second_holder_gets_none(store: Store) -> None:
    everything = _queue(store, "revenue", ["a", "b"], [SLACK, EMAIL])
    everything += _queue(store, "churn", ["c"], [SLACK])
    claimed = store.claim_due_messages("one", now=NOW, lease=LEASE)
    assert [m.id for m in claimed] == everything  # oldest first, with their events
    assert {m.event.kpi_id for m in claimed} == {"revenue", "churn"}
    assert store.claim_due_messages("two", now=NOW, lease=LEASE) == []
    before, after = _db_now(store), _db_now(store) + LEASE
    for message_id, (holder, until) in _claims(store).items():
        assert holder == "one", message_id
        assert until is not None
        # the database's clock, not the caller's ``now`` (two years ago): claims compare
        # with the one clock replicas share
        assert before < until <= after + timedelta(seconds=1)
        assert until.tzinfo == UTC


def test_not_yet_due_and_already_sent_messages_are_not_claimed(store: Store) -> None:
    first, second = _queue(store, "revenue", ["a"], [SLACK, EMAIL])
    store.mark_retry(first, NOW, error="500", next_attempt_at=NOW + timedelta(minutes=5))
    store.mark_sent(second, NOW)
    assert store.claim_due_messages("one", now=NOW, lease=LEASE) == []
    [late] = store.claim_due_messages("one", now=NOW + timedelta(minutes=5), lease=LEASE)
    assert late.id == first


def test_a_later_message_waits_while_an_earlier_one_of_its_conversation_is_pending(
    store: Store,
) -> None:
    head, email_a, follower, email_b = _queue(store, "revenue", ["a", "b"], [SLACK, EMAIL])
    other = _queue(store, "churn", ["c"], [SLACK])[0]
    # one per Slack target: the head is claimed, its follower stays behind
    claimed = store.claim_due_messages("one", now=NOW, lease=LEASE, per_target={"slack": 1})
    assert [m.id for m in claimed] == [head, email_a, email_b]
    # another replica: not the follower, whose head is claimed; the other KPI's head, yes
    assert [m.id for m in store.claim_due_messages("two", now=NOW, lease=LEASE)] == [other]
    # the head fails and is retried later: the follower still waits for it
    store.mark_retry(head, NOW, error="500", next_attempt_at=NOW + timedelta(minutes=5))
    assert store.claim_due_messages("two", now=NOW, lease=LEASE) == []
    store.mark_sent(head, NOW + timedelta(minutes=5))
    assert [m.id for m in store.claim_due_messages("two", now=NOW, lease=LEASE)] == [follower]


def test_an_expired_claim_is_taken_over_and_release_is_per_holder(store: Store) -> None:
    ids = _queue(store, "revenue", ["a"], [SLACK, EMAIL])
    assert len(store.claim_due_messages("dead-replica", now=NOW, lease=timedelta(0))) == 2
    taken = store.claim_due_messages("survivor", now=NOW, lease=LEASE)  # lease 0 has passed
    assert [m.id for m in taken] == ids
    assert store.release_claims("dead-replica", ids) == 0  # not its claims any more
    assert {holder for holder, _ in _claims(store).values()} == {"survivor"}
    assert store.release_claims("survivor", ids[:1]) == 1
    assert _claims(store)[ids[0]] == (None, None)
    assert [m.id for m in store.claim_due_messages("third", now=NOW, lease=LEASE)] == ids[:1]


def test_marking_a_message_ends_its_claim(store: Store) -> None:
    ids = _queue(store, "revenue", ["a"], [SLACK, EMAIL, Delivery("webhook", "ops"),
                                          Delivery("log", "-")])  # fmt: skip
    store.claim_due_messages("one", now=NOW, lease=LEASE)
    assert all(holder == "one" for holder, _ in _claims(store).values())
    sent, retried, dead, suppressed = ids
    store.mark_sent(sent, NOW)
    store.mark_retry(retried, NOW, error="500", next_attempt_at=NOW)
    store.mark_dead(dead, NOW, error="gone")
    store.mark_suppressed(suppressed, NOW, reason="silenced")
    assert set(_claims(store).values()) == {(None, None)}
    # the retried one is due again and free for anyone
    assert [m.id for m in store.claim_due_messages("two", now=NOW, lease=LEASE)] == [retried]


def test_claims_are_fair_across_recipients(store: Store) -> None:
    targets = [Delivery("slack", f"#team-{t}") for t in range(3)]
    by_target: dict[str, list[int]] = {}
    for t, delivery in enumerate(targets):
        for i in range(5):  # five KPIs (five conversations) per channel, queued together
            [message_id] = _queue(store, f"kpi_{t}_{i}", [f"e{t}{i}"], [delivery])
            by_target.setdefault(delivery.target, []).append(message_id)
    claimed = store.claim_due_messages("one", now=NOW, lease=LEASE, limit=6)
    # the oldest 6 would all be #team-0's: round-robin takes each channel's two oldest
    assert sorted(m.id for m in claimed) == sorted(ids[i] for ids in by_target.values()
                                                   for i in (0, 1))  # fmt: skip
    store.release_claims("one", [m.id for m in claimed])
    capped = store.claim_due_messages("one", now=NOW, lease=LEASE, per_target={"slack": 1})
    assert sorted(m.id for m in capped) == sorted(ids[0] for ids in by_target.values())
    store.release_claims("one", [m.id for m in capped])
    skipped = store.claim_due_messages(
        "one", now=NOW, lease=LEASE, per_target={"slack": 1},
        skip=[("slack", "#team-0"), ("slack", "#team-2")],
    )  # fmt: skip
    assert [m.id for m in skipped] == [by_target["#team-1"][0]]


def test_a_row_being_claimed_elsewhere_is_skipped_not_waited_for(store: Store) -> None:
    if store.engine.dialect.name == "sqlite":
        pytest.skip("SQLite has no row locks: it serialises the whole claim")
    head, follower = _queue(store, "revenue", ["a", "b"], [SLACK])
    other = _queue(store, "churn", ["c"], [SLACK])[0]
    with store.engine.connect() as elsewhere, elsewhere.begin():
        # another replica's claim transaction, in flight: it holds the head's row lock
        elsewhere.execute(
            sa.select(outbox_t.c.id).where(outbox_t.c.id == head).with_for_update()
        )
        claimed = store.claim_due_messages("one", now=NOW, lease=LEASE)
        # neither the locked head nor, behind it, its follower: only the other KPI
        assert [m.id for m in claimed] == [other]
    assert [m.id for m in store.claim_due_messages("two", now=NOW, lease=LEASE)] == [
        head, follower
    ]


def test_two_holders_claiming_at_once_never_share_a_row_and_keep_conversations_in_order(
    store: Store,
) -> None:
    conversations: list[list[int]] = []
    for k in range(40):  # 40 KPIs, each a conversation of two messages to one channel
        conversations.append(_queue(store, f"kpi_{k}", [f"{k}a", f"{k}b"],
                                    [Delivery("slack", f"#c{k % 4}")]))  # fmt: skip
    earlier = {later: first for first, later in conversations}
    finished: set[int] = set()  # added just before a message is marked sent
    claims: dict[str, list[list[int]]] = {"one": [], "two": []}
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(2, timeout=30)

    def work(holder: str) -> None:
        with contextlib.suppress(threading.BrokenBarrierError):  # the other one saw it done
            rounds(holder)

    def rounds(holder: str) -> None:
        for _ in range(200):  # bounded; the work ends long before
            start.wait()  # every round both claim at the same moment
            batch = [m.id for m in store.claim_due_messages(
                holder, now=NOW, lease=LEASE, limit=7, per_target={"slack": 2})]  # fmt: skip
            with lock:
                claims[holder].append(batch)
                for message_id in batch:  # a conversation's earlier message is done or ours
                    first = earlier.get(message_id)
                    if first is not None and first not in finished and first not in batch:
                        errors.append(f"{holder} claimed {message_id} before {first} was sent")
                finished.update(batch)
            for message_id in batch:
                store.mark_sent(message_id, NOW)
            with lock:
                if len(finished) == 80:
                    start.abort()  # the other thread's wait ends too
                    return

    threads = [threading.Thread(target=work, args=(h,)) for h in claims]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    every = [i for batches in claims.values() for batch in batches for i in batch]
    assert sorted(every) == sorted(i for pair in conversations for i in pair)  # each once
    assert all(any(batches) for batches in claims.values()), "both holders got work"
