"""The store's notification contract (silences, acks, annotations, Slack threads,
digest marks, dead-letter retries, suppression) on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from kpiwatch.errors import StoreError
from kpiwatch.model import (
    Delivery,
    DeliveryState,
    Event,
    EventKind,
    KpiState,
    MatcherKind,
    ReviewCadence,
    SlackThread,
    Status,
)
from kpiwatch.store import Store

T0 = datetime(2024, 3, 1, 9, 30, 15, 123456, tzinfo=UTC)
CEST = timezone(timedelta(hours=2))
SLACK = Delivery("slack", "#kpis")
EMAIL = Delivery("email", "sam@example.com")


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


# -- schema ----------------------------------------------------------------------------


def test_migration_0002_adds_the_tables_and_indexes(store: Store) -> None:
    # the full compare_metadata check lives in test_store.py; this names what 0002 owns
    with store.engine.connect() as connection:
        inspector = sa.inspect(connection)
        tables = set(inspector.get_table_names())
        indexes = {i["name"] for i in inspector.get_indexes("annotations")}
        uniques = {u["name"] for u in inspector.get_unique_constraints("acks")}
    assert {"silences", "acks", "annotations", "slack_threads", "digest_marks"} <= tables
    assert "ix_annotations_kpi_id_at" in indexes
    assert "uq_acks_kpi_id_episode_since" in uniques


# -- silences ----------------------------------------------------------------------------


def test_silences_round_trip_and_filter_by_activity(store: Store) -> None:
    first = store.add_silence(MatcherKind.KPI, "revenue", at(0), at(60), "sam", "deploy", at(0))
    second = store.add_silence(
        MatcherKind.LABEL, "region=emea", at(30), at(90), "kim", "migration", at(1)
    )
    third = store.add_silence(MatcherKind.TEAM, "finance", at(-60), at(-1), "lee", "old", at(2))
    assert first.id != second.id
    assert (first.matcher, first.value, first.author, first.comment) == (
        MatcherKind.KPI, "revenue", "sam", "deploy"
    )
    assert (first.starts_at, first.ends_at, first.created_at, first.expired_at) == (
        at(0), at(60), at(0), None
    )
    assert first.starts_at.tzinfo == UTC
    assert store.silences() == [third, second, first]  # newest first
    assert store.silences(active_at=at(10)) == [first]
    assert store.silences(active_at=at(45)) == [second, first]
    assert store.silences(active_at=at(60)) == [second]  # ends_at is exclusive
    assert store.silences(active_at=at(200)) == []


def test_silence_times_in_other_offsets_are_stored_as_utc(store: Store) -> None:
    silence = store.add_silence(
        MatcherKind.KPI, "revenue", at(0).astimezone(CEST), at(60).astimezone(CEST),
        "sam", "deploy", at(0).astimezone(CEST),
    )
    assert store.silences()[0].starts_at == at(0)
    assert silence.ends_at.utcoffset() == timedelta(0)


def test_expire_silence(store: Store) -> None:
    silence = store.add_silence(MatcherKind.KPI, "revenue", at(0), at(60), "sam", "x", at(0))
    expired = store.expire_silence(silence.id, at(20))
    assert expired.expired_at == at(20)
    assert expired.active(at(10))
    assert not expired.active(at(20))
    assert store.silences(active_at=at(10)) == [expired]
    assert store.silences(active_at=at(30)) == []
    assert store.expire_silence(silence.id, at(40)).expired_at == at(20)  # the first time stays
    with pytest.raises(StoreError, match="no silence with id 999999"):
        store.expire_silence(999_999, at(0))


def test_a_silence_must_end_after_it_starts(store: Store) -> None:
    with pytest.raises(StoreError, match="must end after it starts"):
        store.add_silence(MatcherKind.KPI, "revenue", at(10), at(10), "sam", "x", at(0))
    assert store.silences() == []


# -- acks --------------------------------------------------------------------------------


def test_ack_once_per_episode_and_acking_again_replaces(store: Store) -> None:
    assert store.ack_for("revenue", at(0)) is None
    ack = store.ack("revenue", at(0), "sam", "looking into it", at(5))
    assert (ack.kpi_id, ack.episode_since, ack.author, ack.comment, ack.at) == (
        "revenue", at(0), "sam", "looking into it", at(5)
    )
    assert store.ack_for("revenue", at(0)) == ack
    again = store.ack("revenue", at(0), "kim", "fixed upstream, waiting", at(9))
    assert again.id == ack.id
    assert (again.author, again.comment, again.at) == ("kim", "fixed upstream, waiting", at(9))
    assert store.ack_for("revenue", at(0)) == again
    # another episode, another KPI: separate acks
    assert store.ack_for("revenue", at(100)) is None
    other = store.ack("churn", at(0), "lee", "mine", at(6))
    assert other.id != ack.id
    assert store.ack_for("revenue", at(0)) == again


def test_current_acks_of_many_kpis_in_one_read(store: Store) -> None:
    for kpi in ("revenue", "churn", "signups"):
        store.save_state(KpiState(kpi, Status.RED, since=at(10), review=ReviewCadence.WEEKLY))
    current = store.ack("revenue", at(10), "sam", "on it", at(11))
    store.ack("churn", at(0), "kim", "an earlier episode", at(5))
    store.ack("orphan", at(10), "lee", "no state", at(11))
    assert store.current_acks() == {"revenue": current}
    assert store.current_acks(["revenue", "churn"]) == {"revenue": current}
    assert store.current_acks(["churn", "signups", "nothing"]) == {}
    assert store.current_acks([]) == {}
    ids = [f"kpi_{i}" for i in range(1200)] + ["revenue"]  # more than one IN list
    assert store.current_acks(ids) == {"revenue": current}


# -- annotations ---------------------------------------------------------------------------


def test_annotations_ascending_with_since_and_limit(store: Store) -> None:
    store.annotate("revenue", at(30), "price change", "sam", at(40))
    first = store.annotate("revenue", at(10), "campaign start", "kim", at(41))
    store.annotate("revenue", at(50), "outage", "lee", at(60))
    store.annotate("churn", at(10), "elsewhere", "lee", at(60))
    assert (first.kpi_id, first.at, first.text, first.author, first.created_at) == (
        "revenue", at(10), "campaign start", "kim", at(41)
    )
    assert [a.text for a in store.annotations("revenue")] == [
        "campaign start", "price change", "outage"
    ]
    assert store.annotations("revenue")[0] == first
    assert [a.text for a in store.annotations("revenue", since=at(30))] == [
        "price change", "outage"
    ]
    assert [a.text for a in store.annotations("revenue", limit=2)] == ["price change", "outage"]
    assert store.annotations("nothing") == []


# -- Slack threads and digest marks ----------------------------------------------------------


def test_slack_threads_are_per_kpi_channel_and_episode(store: Store) -> None:
    assert store.slack_thread("revenue", "#kpis", at(0)) is None
    store.save_slack_thread("revenue", "#kpis", at(0), "1712345678.000100")
    store.save_slack_thread("revenue", "#kpis", at(0), "1712345678.000100")  # idempotent
    assert store.slack_thread("revenue", "#kpis", at(0)) == SlackThread("1712345678.000100")
    assert store.slack_thread("revenue", "#kpis", at(1)) is None
    assert store.slack_thread("revenue", "#other", at(0)) is None
    parent = {"channel": "C0KPIS", "text": "Revenue is red", "blocks": [{"type": "header"}]}
    store.save_slack_thread("revenue", "#kpis", at(0), "1712345999.000200", parent)
    assert store.slack_thread("revenue", "#kpis", at(0)) == SlackThread("1712345999.000200", parent)


def test_digest_marks(store: Store) -> None:
    assert store.digest_mark("oncall") is None
    store.set_digest_mark("oncall", at(0))
    store.set_digest_mark("weekly", at(1).astimezone(CEST))
    store.set_digest_mark("oncall", at(60))
    assert store.digest_mark("oncall") == at(60)
    mark = store.digest_mark("weekly")
    assert mark == at(1)
    assert mark is not None
    assert mark.tzinfo == UTC


# -- outbox: dead-letter retries and suppression ----------------------------------------------


def _three_messages(store: Store) -> list[int]:
    state = KpiState("revenue", Status.RED, since=at(0), review=ReviewCadence.WEEKLY)
    events = [
        Event(EventKind.STATUS_CHANGED, key, at(0), kpi_id="revenue") for key in ("a", "b")
    ]
    store.save_state(state, events, {"a": [SLACK, EMAIL], "b": [SLACK]})
    return [m.id for m in store.due_messages(at(1))]


def test_retry_dead_by_id_and_all(store: Store) -> None:
    one, two, three = _three_messages(store)
    store.mark_dead(one, at(1), error="channel_not_found")
    store.mark_dead(two, at(1), error="bounced")
    store.mark_sent(three, at(1))
    assert store.retry_dead([], at(5)) == 0
    assert store.retry_dead([one, three, 999_999], at(5)) == 1  # only dead ones are revived
    by_id = {m.id: m for m in store.messages()}
    assert by_id[one].state is DeliveryState.PENDING
    assert (by_id[one].attempts, by_id[one].next_attempt_at) == (1, at(5))  # attempts kept
    assert by_id[three].state is DeliveryState.SENT
    assert [m.id for m in store.due_messages(at(5))] == [one]

    store.mark_dead(one, at(6), error="still not found")
    assert store.retry_dead(None, at(7)) == 2
    assert store.messages(states=[DeliveryState.DEAD]) == []
    assert {m.id for m in store.due_messages(at(7))} == {one, two}
    assert store.retry_dead(None, at(8)) == 0


def test_mark_suppressed(store: Store) -> None:
    one, two, _ = _three_messages(store)
    store.mark_suppressed(one, at(2), reason="silenced by #4 (kpi revenue): deploy")
    suppressed = store.messages(states=[DeliveryState.SUPPRESSED])
    assert [m.id for m in suppressed] == [one]
    assert suppressed[0].last_error == "silenced by #4 (kpi revenue): deploy"
    assert suppressed[0].attempts == 0
    assert one not in [m.id for m in store.due_messages(at(100))]
    assert store.retry_dead(None, at(3)) == 0  # suppressed is not dead
    with pytest.raises(StoreError, match="no outbox message"):
        store.mark_suppressed(999_999, at(2), reason="x")
    assert two in [m.id for m in store.due_messages(at(100))]


# -- what a notice shows, in bulk ---------------------------------------------------------


def test_notice_context_reads_many_kpis_at_once(store: Store) -> None:
    from kpiwatch.model import Observation

    since = at(0)
    for kpi in ("revenue", "churn"):
        store.save_state(KpiState(kpi, Status.RED, since=since, review=ReviewCadence.WEEKLY))
    store.add_observations(
        [Observation("revenue", at(i), float(i)) for i in range(40)]
        + [Observation("churn", at(i), -float(i)) for i in range(3)]
    )
    store.annotate("revenue", at(-100), "too old", "sam", at(1))
    for i in range(3):
        store.annotate("revenue", at(i), f"note {i}", "sam", at(1))
    store.ack("revenue", since, "kim", "on it", at(2))
    store.ack("churn", at(-50), "kim", "an earlier episode", at(2))

    found = store.notice_context(["revenue", "churn", "unknown"], points=30,
                                 annotations_since=at(-10))  # fmt: skip
    revenue, churn, unknown = found["revenue"], found["churn"], found["unknown"]
    assert revenue.state is not None
    assert revenue.state.status is Status.RED
    # the newest 30, oldest first: the same as history(limit=30)
    assert revenue.recent == tuple(store.history("revenue", limit=30))
    assert [o.value for o in revenue.recent] == [float(i) for i in range(10, 40)]
    assert [o.value for o in churn.recent] == [0.0, -1.0, -2.0]
    assert [a.text for a in revenue.annotations] == ["note 0", "note 1", "note 2"]
    assert revenue.ack == store.ack_for("revenue", since)
    assert churn.ack is None  # acked an earlier episode, not the current one
    assert unknown == (None, (), (), None)
    assert store.notice_context([], points=30, annotations_since=at(0)) == {}
    # without annotations (the status board's cards)
    lean = store.notice_context(["revenue"], points=5, annotations_since=None)["revenue"]
    assert (lean.state, lean.recent, lean.annotations, lean.ack) == (
        revenue.state, revenue.recent[-5:], (), revenue.ack
    )
