"""The store's contract, run against every backend kpiwatch supports.

Each test gets a fresh, migrated database: SQLite in a temp dir, and throwaway
databases on this machine's PostgreSQL and MariaDB servers (see conftest).
"""

from __future__ import annotations

import contextlib
import itertools
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from kpiwatch.errors import EvaluationSuperseded, InstanceLockedError, StoreError
from kpiwatch.model import (
    Delivery,
    DeliveryState,
    Evaluation,
    Event,
    EventKind,
    Kept,
    KpiState,
    Observation,
    ReviewCadence,
    Status,
)
from kpiwatch.store import InstanceLock, Store, create_store_engine, retention_store
from kpiwatch.store import migrate as migrations
from kpiwatch.store.fencing import Basis
from kpiwatch.store.repository import EvaluationToSave
from kpiwatch.store.repository import Store as StoreImpl
from kpiwatch.store.schema import metadata

T0 = datetime(2024, 3, 1, 9, 30, 15, 123456, tzinfo=UTC)
CEST = timezone(timedelta(hours=2))


@pytest.fixture
def sqlite_store(sqlite_url: str) -> Iterator[Store]:
    opened = Store.open(sqlite_url)
    yield opened
    opened.close()


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def state(kpi_id: str, status: Status, when: datetime, **changes: Any) -> KpiState:
    base = KpiState(kpi_id, status, since=when, review=ReviewCadence.WEEKLY, last_evaluated=when)
    return base._replace(**changes)


def event(key: str, when: datetime, kind: EventKind = EventKind.STATUS_CHANGED,
          kpi_id: str | None = "revenue") -> Event:
    return Event(kind=kind, key=key, at=when, kpi_id=kpi_id, data={"to": "red", "n": 1})


def evaluation(st: KpiState, when: datetime, events: tuple[Event, ...] = ()) -> Evaluation:
    return Evaluation(kpi_id=st.kpi_id, at=when, value=st.value, observed_at=st.observed_at,
                      raw_status=st.status, findings=(), state=st, events=events)


SLACK = Delivery("slack", "#kpis")
EMAIL = Delivery("email", "ops@example.com")


# -- schema ------------------------------------------------------------------


def test_migrations_create_exactly_the_schema(store: Store) -> None:
    with store.engine.connect() as connection:
        diffs = compare_metadata(
            MigrationContext.configure(connection, opts={"compare_type": True}), metadata
        )
        tables = set(sa.inspect(connection).get_table_names())
    assert diffs == []
    assert tables == set(metadata.tables) | {"alembic_version"}
    assert migrations.current_revision(store.engine) == migrations.head_revision()
    store.migrate()  # idempotent


def test_compare_metadata_would_notice_a_missing_index(store: Store) -> None:
    # guards the test above against comparing nothing
    with store.engine.begin() as connection:
        connection.execute(sa.text("DROP INDEX ix_events_at" + (
            " ON events" if connection.dialect.name in ("mysql", "mariadb") else "")))
        diffs = compare_metadata(MigrationContext.configure(connection), metadata)
    assert [d[0] for d in diffs] == ["add_index"]


def test_ping_and_redacted_url(store: Store) -> None:
    assert store.ping()
    broken = Store(create_store_engine("postgresql+psycopg://kw:s3cret@127.0.0.1:1/nowhere"))
    assert not broken.ping()
    assert "s3cret" not in broken.url


def test_unreachable_database_is_a_store_error_without_the_password() -> None:
    with pytest.raises(StoreError) as info:
        Store.open("postgresql+psycopg://kw:s3cret@127.0.0.1:1/nowhere")
    assert "s3cret" not in str(info.value)
    assert isinstance(info.value.__cause__, sa.exc.OperationalError)


# -- observations --------------------------------------------------------------


def test_observations_are_stored_once(store: Store) -> None:
    series = [Observation("revenue", at(i), float(i)) for i in range(5)]
    assert store.add_observations(series) == 5
    assert store.add_observations(series) == 0
    assert store.add_observations([*series, Observation("revenue", at(5), 5.0)]) == 1
    assert store.add_observations([series[0], series[0]]) == 0  # duplicates within a batch
    assert store.add_observations([]) == 0
    assert [o.value for o in store.history("revenue")] == [0, 1, 2, 3, 4, 5]


def test_history_order_since_limit_and_latest(store: Store) -> None:
    store.add_observations(Observation("revenue", at(i), i * 1.5) for i in (3, 0, 2, 1))
    store.add_observations([Observation("churn", at(9), 0.25)])
    assert [o.observed_at for o in store.history("revenue")] == [at(0), at(1), at(2), at(3)]
    assert [o.value for o in store.history("revenue", since=at(2))] == [3.0, 4.5]
    assert [o.value for o in store.history("revenue", limit=2)] == [3.0, 4.5]
    assert [o.value for o in store.history("revenue", since=at(1), limit=5)] == [1.5, 3.0, 4.5]
    assert store.latest("revenue") == Observation("revenue", at(3), 4.5)
    assert store.latest("nope") is None
    assert store.history("nope") == []


def test_prune_deletes_what_the_retention_drops_and_keeps_each_kpis_newest(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention_store, "PRUNE_CHUNK", 2)  # four KPIs: two transactions
    day = 24 * 60
    store.add_observations(
        Observation(kpi_id, at(i * day), float(i)) for kpi_id in "abcde" for i in range(10)
    )
    assert store.observed_kpis() == set("abcde")
    kept = {
        "a": Kept(at(5 * day), 1),  # days 0-4 go
        "b": Kept(at(50 * day), 3),  # every point is older: its newest three stay
        "c": Kept(at(0), 1),  # nothing is older
        "e": Kept(at(50 * day), 0),  # removed from the rules: every point is older
    }  # d: not asked about, untouched

    def days() -> dict[str, list[int]]:
        return {k: [round(o.value) for o in store.history(k)] for k in "abcde"}

    assert store.prune_observations(kept, dry_run=True) == 5 + 7 + 10
    assert days() == {k: list(range(10)) for k in "abcde"}
    assert store.prune_observations(kept) == 5 + 7 + 10
    assert days() == {"a": [5, 6, 7, 8, 9], "b": [7, 8, 9], "c": list(range(10)),
                      "d": list(range(10)), "e": []}  # fmt: skip
    assert store.observed_kpis() == set("abcd")
    assert store.prune_observations(kept) == 0
    assert store.prune_observations({}) == 0


def test_prune_records_deletes_old_notifications_events_and_changes_that_are_done(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention_store, "RECORDS_CHUNK", 1)  # a transaction a row
    day = 24 * 60
    steps = [(0, Status.GREEN, SLACK), (1, Status.RED, SLACK), (2, Status.GREEN, EMAIL),
             (10, Status.RED, SLACK)]  # fmt: skip
    for d, status, target in steps:
        st = state("revenue", status, at(d * day))
        happened = event(f"revenue:{d}", at(d * day))
        store.save_evaluation(evaluation(st, at(d * day), (happened,)),
                              {happened.key: [target]})  # fmt: skip
    store.save_evaluation(evaluation(state("churn", Status.GREEN, at(0)), at(0)))
    by_key = {m.event.key: m for m in store.messages()}
    store.mark_sent(by_key["revenue:0"].id, at(1))
    store.mark_suppressed(by_key["revenue:2"].id, at(2 * day), reason="muted")
    store.mark_sent(by_key["revenue:10"].id, at(10 * day))
    # revenue:1's notification still waits: it and its event stay however old

    def left() -> tuple[list[str], list[str], list[tuple[str, int]]]:
        events = sorted(e.key for e in store.events())
        messages = sorted(m.event.key for m in store.messages())
        changes = [(k, c.at.day) for k in ("churn", "revenue") for c in store.status_changes(k)]
        return events, messages, changes

    before = left()
    expected = {"outbox": 2, "events": 2, "status_changes": 3}
    assert store.prune_records(at(5 * day), dry_run=True) == expected
    assert left() == before
    assert store.prune_records(at(5 * day)) == expected
    assert left() == (
        ["revenue:1", "revenue:10"],
        ["revenue:1", "revenue:10"],
        [("churn", 1), ("revenue", 11)],  # each KPI's newest change: churn's is old
    )
    assert store.prune_records(at(5 * day)) == dict.fromkeys(expected, 0)


def test_status_changes_since_reads_every_kpis_changes_in_order(store: Store) -> None:
    for kpi_id, status, minutes in [("b", Status.GREEN, 0), ("a", Status.GREEN, 1),
                                    ("b", Status.RED, 5), ("a", Status.RED, 5)]:  # fmt: skip
        st = state(kpi_id, status, at(minutes))
        store.save_evaluation(evaluation(st, at(minutes)))
    every = [(c.kpi_id, c.to_status, c.at) for c in store.status_changes_since(None)]
    assert every == [("b", Status.GREEN, at(0)), ("a", Status.GREEN, at(1)),
                     ("b", Status.RED, at(5)), ("a", Status.RED, at(5))]  # fmt: skip
    assert [c.kpi_id for c in store.status_changes_since(at(1))] == ["b", "a"]
    assert store.status_changes_since(at(5)) == []


def test_timestamps_come_back_aware_utc(store: Store) -> None:
    local = datetime(2024, 7, 1, 11, 0, 0, 654321, tzinfo=CEST)  # 09:00 UTC
    store.add_observations([Observation("revenue", local, 1.0)])
    got = store.latest("revenue")
    assert got is not None
    assert got.observed_at == local
    assert got.observed_at.tzinfo is UTC
    assert got.observed_at.hour == 9

    st = state("revenue", Status.RED, local, escalated_since=local, next_review=local)
    store.save_state(st)
    back = store.get_state("revenue")
    assert back == st
    assert back is not None
    assert {back.since.tzinfo, back.escalated_since.tzinfo, back.next_review.tzinfo} == {UTC}  # type: ignore[union-attr]


def test_naive_datetimes_are_refused(store: Store) -> None:
    with pytest.raises(StoreError, match="naive datetime"):
        store.add_observations([Observation("revenue", datetime(2024, 1, 1), 1.0)])
    naive = state("revenue", Status.RED, at(0), last_review=datetime(2024, 1, 1))
    with pytest.raises(StoreError, match="naive datetime"):
        store.save_evaluations([EvaluationToSave(evaluation(naive, at(0)))])
    with pytest.raises(StoreError, match="naive datetime"):
        store.save_evaluations([EvaluationToSave(
            evaluation(state("revenue", Status.RED, at(0)), at(0)), {},
            [Observation("revenue", datetime(2024, 1, 1), 1.0)])])  # fmt: skip
    assert store.states() == {}


# -- state, history, events --------------------------------------------------------


def test_state_round_trips_every_field(store: Store) -> None:
    full = KpiState(
        kpi_id="revenue", status=Status.YELLOW, since=at(0), review=ReviewCadence.DAILY,
        pending_status=Status.RED, pending_count=2, value=-12.5, observed_at=at(1),
        reasons=("below 100 → yellow", "3 worse in a row"), last_evaluated=at(2),
        escalated_since=at(3), green_since=at(4), green_count=7, last_review=at(5),
        next_review=at(6), error="source 'db': timeout", reminders_sent=3,
    )
    minimal = state("churn", Status.UNKNOWN, at(0))
    store.save_state(full)
    store.save_state(minimal)
    assert store.get_state("revenue") == full
    assert store.states() == {"revenue": full, "churn": minimal}
    assert store.get_state("nope") is None
    # the same through the batch path, with values that test the encoding (CEST is UTC+2)
    odd = full._replace(kpi_id="odd 'kpi' \"x\"", value=0.1 + 0.2, since=at(0).astimezone(CEST),
                        reasons=('quote " and \\ backslash', "ünïcode ✓"))  # fmt: skip
    store.save_evaluations([EvaluationToSave(evaluation(odd, at(7)), {},
                                             [Observation(odd.kpi_id, at(7), 1e-300)])])
    assert store.get_state(odd.kpi_id) == odd._replace(since=at(0))
    assert store.history(odd.kpi_id) == [Observation(odd.kpi_id, at(7), 1e-300)]


def test_states_narrowed_by_status_and_review_time(store: Store) -> None:
    # what the reminder and review ticks read: the database filters, not Python
    store.save_state(state("red", Status.RED, at(0), next_review=at(30)))
    store.save_state(state("yellow", Status.YELLOW, at(0), next_review=at(90)))
    store.save_state(state("green", Status.GREEN, at(0), next_review=at(60).astimezone(CEST)))
    store.save_state(state("unknown", Status.UNKNOWN, at(0)))  # no review: never due
    assert set(store.states(statuses={Status.RED, Status.YELLOW})) == {"red", "yellow"}
    assert set(store.states(statuses={Status.UNKNOWN})) == {"unknown"}
    assert set(store.states(review_by=at(59))) == {"red"}
    assert set(store.states(review_by=at(60))) == {"red", "green"}  # at the time: due
    assert set(store.states(statuses={Status.YELLOW}, review_by=at(60))) == set()
    assert store.states(review_by=at(90))["yellow"] == state(
        "yellow", Status.YELLOW, at(0), next_review=at(90)
    )
    # the reminder tick: episodes old enough for a first reminder
    store.save_state(state("young", Status.RED, at(50)))
    assert set(store.states(statuses={Status.RED}, started_by=at(49))) == {"red"}
    started_by = at(50).astimezone(CEST)  # at the time: old enough
    assert set(store.states(statuses={Status.RED}, started_by=started_by)) == {"red", "young"}
    assert len(store.states()) == 5


def test_evaluated_since_names_the_kpis_evaluated_at_or_after_a_time(store: Store) -> None:
    store.save_state(state("early", Status.GREEN, at(0), last_evaluated=at(9)))
    store.save_state(state("on_time", Status.RED, at(0), last_evaluated=at(10)))
    store.save_state(state("late", Status.RED, at(0), last_evaluated=at(11).astimezone(CEST)))
    store.save_state(state("never", Status.UNKNOWN, at(0), last_evaluated=None))
    kpis = ["early", "on_time", "late", "never", "absent"]
    assert store.evaluated_since(kpis, at(10)) == {"on_time", "late"}
    assert store.evaluated_since(["early"], at(9)) == {"early"}
    assert store.evaluated_since([], at(0)) == set()


def test_save_evaluation_writes_everything(store: Store) -> None:
    red = state("revenue", Status.RED, at(0), value=80.0, reasons=("below 90",))
    ev = event("revenue:red:1", at(0))
    obs = [Observation("revenue", at(-1), 85.0), Observation("revenue", at(0), 80.0)]
    store.save_evaluation(evaluation(red, at(0), (ev,)), {ev.key: [SLACK, EMAIL, SLACK]},
                          observations=obs)

    assert store.get_state("revenue") == red
    assert store.history("revenue") == obs
    [change] = store.status_changes("revenue")
    assert (change.from_status, change.to_status, change.at) == (None, Status.RED, at(0))
    assert (change.value, change.reasons) == (80.0, ("below 90",))
    assert store.events() == [ev]
    due = store.due_messages(at(0))
    assert [(m.channel, m.target, m.state, m.attempts) for m in due] == [
        ("slack", "#kpis", DeliveryState.PENDING, 0),
        ("email", "ops@example.com", DeliveryState.PENDING, 0),
    ]
    assert due[0].event == ev
    assert due[0].next_attempt_at == at(0)

    # same status again: state updated, no new history row
    still = state("revenue", Status.RED, at(0), value=70.0, last_evaluated=at(5))
    store.save_evaluation(evaluation(still, at(5)))
    assert store.get_state("revenue") == still
    assert len(store.status_changes("revenue")) == 1

    green = state("revenue", Status.GREEN, at(10), value=120.0)
    store.save_evaluation(evaluation(green, at(10)))
    changes = store.status_changes("revenue")
    assert [(c.from_status, c.to_status) for c in changes] == [
        (None, Status.RED), (Status.RED, Status.GREEN)]
    assert store.status_changes("revenue", limit=1) == changes[1:]


def test_save_evaluation_is_all_or_nothing(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_args: object) -> None:
        raise sa.exc.OperationalError("INSERT INTO outbox", {}, Exception("disk full"))

    monkeypatch.setattr(StoreImpl, "_insert_outbox", staticmethod(boom))
    red = state("revenue", Status.RED, at(0), value=80.0)
    ev = event("revenue:red:1", at(0))
    with pytest.raises(StoreError, match="disk full") as info:
        store.save_evaluation(evaluation(red, at(0), (ev,)), {ev.key: [SLACK]},
                              observations=[Observation("revenue", at(0), 80.0)])
    assert isinstance(info.value.__cause__, sa.exc.OperationalError)

    assert store.get_state("revenue") is None
    assert store.history("revenue") == []
    assert store.status_changes("revenue") == []
    assert store.events() == []
    assert store.messages() == []

    monkeypatch.undo()  # the same call succeeds once the failure is gone
    store.save_evaluation(evaluation(red, at(0), (ev,)), {ev.key: [SLACK]},
                          observations=[Observation("revenue", at(0), 80.0)])
    assert len(store.messages()) == 1


def test_latest_of_and_evaluation_inputs_read_many_kpis_at_once(store: Store) -> None:
    store.add_observations(Observation("revenue", at(i), float(i)) for i in (2, 0, 1))
    store.add_observations([Observation("churn", at(5), 0.25)])
    red = state("churn", Status.RED, at(5), value=0.25)
    store.save_state(red)

    assert store.latest_of(["revenue", "churn", "nope"]) == {
        "revenue": Observation("revenue", at(2), 2.0),
        "churn": Observation("churn", at(5), 0.25),
    }
    assert store.latest_of([]) == {}
    inputs = store.evaluation_inputs(["revenue", "churn", "nope"], since=at(1))
    assert inputs == {
        "revenue": (None, [Observation("revenue", at(1), 1.0), Observation("revenue", at(2), 2.0)]),
        "churn": (red, [Observation("churn", at(5), 0.25)]),
        "nope": (None, []),
    }
    # more KPIs than one IN (...) list holds
    many = [f"kpi_{i}" for i in range(1200)]
    store.add_observations(Observation(k, at(0), 1.0) for k in many)
    assert len(store.latest_of(many)) == 1200
    found = store.evaluation_inputs(many, since=at(0))
    assert all(history == [Observation(k, at(0), 1.0)] for k, (_, history) in found.items())


def test_evaluation_inputs_reads_only_the_newest_points_of_kpis_given_a_limit(
    store: Store,
) -> None:
    # "revenue" has 10 points, "churn" 3, "signups" 1; only "revenue" and "churn" are limited
    store.add_observations(Observation("revenue", at(i), float(i)) for i in range(10))
    store.add_observations(Observation("churn", at(i), float(i)) for i in range(3))
    store.add_observations([Observation("signups", at(4), 4.0)])
    red = state("churn", Status.RED, at(2), value=2.0)
    store.save_state(red)

    inputs = store.evaluation_inputs(
        ["revenue", "churn", "signups", "nope"], since=at(1), newest={"revenue": 4, "churn": 5}
    )

    assert inputs == {
        "revenue": (None, [Observation("revenue", at(i), float(i)) for i in (6, 7, 8, 9)]),
        # fewer points than the limit, and none before ``since``
        "churn": (red, [Observation("churn", at(1), 1.0), Observation("churn", at(2), 2.0)]),
        "signups": (None, [Observation("signups", at(4), 4.0)]),  # not limited: all since
        "nope": (None, []),
    }
    # more limited KPIs than one UNION holds, with different limits
    many = [f"kpi_{i}" for i in range(450)]
    store.add_observations(Observation(k, at(m), float(m)) for k in many for m in range(3))
    limits = {k: 1 + i % 3 for i, k in enumerate(many)}
    found = store.evaluation_inputs(many, since=at(0), newest=limits)
    assert all(
        history == [Observation(k, at(m), float(m)) for m in range(3 - limits[k], 3)]
        for k, (_, history) in found.items()
    )


def test_save_evaluations_writes_each_like_save_evaluation(store: Store) -> None:
    store.save_evaluation(evaluation(state("churn", Status.GREEN, at(0)), at(0)))
    red = state("revenue", Status.RED, at(5), value=80.0)
    ev = event("revenue:red:1", at(5))
    still = state("churn", Status.GREEN, at(0), value=1.0, last_evaluated=at(5))
    yellow = state("signups", Status.YELLOW, at(5), value=3.0)
    yev = event("signups:yellow:1", at(5), kpi_id="signups")
    store.save_evaluations([
        EvaluationToSave(evaluation(red, at(5), (ev,)), {ev.key: [SLACK, EMAIL]},
                         [Observation("revenue", at(5), 80.0)]),
        EvaluationToSave(evaluation(still, at(5)), {}, [Observation("churn", at(5), 1.0)]),
        EvaluationToSave(evaluation(yellow, at(5), (yev,)), {yev.key: [SLACK]}),
    ])  # fmt: skip

    assert store.states() == {"revenue": red, "churn": still, "signups": yellow}
    assert store.history("revenue") == [Observation("revenue", at(5), 80.0)]
    assert store.history("churn") == [Observation("churn", at(5), 1.0)]
    assert [(c.from_status, c.to_status) for c in store.status_changes("revenue")] == [
        (None, Status.RED)]
    assert len(store.status_changes("churn")) == 1  # unchanged: no new row
    assert [c.to_status for c in store.status_changes("signups")] == [Status.YELLOW]
    assert store.events() == [ev, yev]
    assert sorted((m.event.key, m.channel) for m in store.messages()) == [
        ("revenue:red:1", "email"), ("revenue:red:1", "slack"), ("signups:yellow:1", "slack")]

    # again, green now, with the same event: the event and its deliveries stay once
    green = state("revenue", Status.GREEN, at(10))
    store.save_evaluations([EvaluationToSave(evaluation(green, at(10), (ev,)), {ev.key: [SLACK]})])
    assert [(c.from_status, c.to_status) for c in store.status_changes("revenue")] == [
        (None, Status.RED), (Status.RED, Status.GREEN)]
    assert len(store.messages()) == 3
    store.save_evaluations([])
    with pytest.raises(ValueError, match="one evaluation per KPI"):
        store.save_evaluations([EvaluationToSave(evaluation(green, at(11)))] * 2)


def test_save_evaluations_is_all_or_nothing(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_args: object) -> None:
        raise sa.exc.OperationalError("INSERT INTO outbox", {}, Exception("disk full"))

    monkeypatch.setattr(StoreImpl, "_insert_outbox", staticmethod(boom))
    red = state("revenue", Status.RED, at(0), value=80.0)
    ev = event("revenue:red:1", at(0))
    batch = [
        EvaluationToSave(evaluation(state("churn", Status.GREEN, at(0)), at(0)), {},
                         [Observation("churn", at(0), 1.0)]),
        EvaluationToSave(evaluation(red, at(0), (ev,)), {ev.key: [SLACK]},
                         [Observation("revenue", at(0), 80.0)]),
    ]  # fmt: skip
    with pytest.raises(StoreError, match=r"save evaluations: .*disk full"):
        store.save_evaluations(batch)

    assert store.states() == {}
    assert store.history("churn") == store.history("revenue") == []
    assert store.status_changes("churn") == store.status_changes("revenue") == []
    assert store.events() == []
    assert store.messages() == []

    monkeypatch.undo()
    store.save_evaluations(batch)
    assert set(store.states()) == {"churn", "revenue"}
    assert len(store.messages()) == 1


def test_a_known_event_key_is_written_once_with_its_deliveries(store: Store) -> None:
    red = state("revenue", Status.RED, at(0))
    ev = event("revenue:red:1", at(0))
    store.save_evaluation(evaluation(red, at(0), (ev,)), {ev.key: [SLACK]})
    # a retried evaluation, or a second replica, with more deliveries this time
    store.save_evaluation(evaluation(red, at(0), (ev,)), {ev.key: [SLACK, EMAIL]})
    store.save_state(red, [ev], {ev.key: [EMAIL]})
    assert store.events() == [ev]
    assert [(m.channel, m.target) for m in store.messages()] == [("slack", "#kpis")]
    # a key twice in one write: recorded once, and so are its deliveries
    again = event("revenue:red:2", at(1))
    store.save_state(red, [again, again], {again.key: [EMAIL]})
    assert store.events() == [ev, again]
    assert sorted(m.channel for m in store.messages()) == ["email", "slack"]


def test_save_state_for_review_ticks(store: Store) -> None:
    store.save_evaluation(evaluation(state("revenue", Status.RED, at(0)), at(0)))
    reviewed = state("revenue", Status.RED, at(0), last_review=at(60), next_review=at(120))
    due = event("revenue:review:1", at(60), EventKind.REVIEW_DUE)
    store.save_state(reviewed, [due], {due.key: [EMAIL]})
    assert store.get_state("revenue") == reviewed
    assert len(store.status_changes("revenue")) == 1
    assert store.events(kinds={EventKind.REVIEW_DUE}) == [due]
    assert [m.event.key for m in store.due_messages(at(60))] == [due.key]


REMINDED = """
kpis:
  - {id: revenue, name: Revenue, owner: ann@example.com, direction: higher_is_better,
     source: push, reminders: {first: 1h, factor: 2, max: 3h}}
"""


def test_reminder_ticks_store_each_reminder_once_across_replicas(store: Store) -> None:
    from kpiwatch.config.loader import load_rule_text
    from kpiwatch.notify.routing import Router
    from kpiwatch.runtime.runner import Runner
    from kpiwatch.runtime.workspace import Workspace
    from kpiwatch.testing import FixedClock

    loaded = load_rule_text(REMINDED, "rules.yaml")
    clock = FixedClock(at(0))
    replicas = [
        Runner(store, clock, Workspace(loaded, {}, Router(loaded.rules, channels=frozenset(
            {"email"}))), tz=ZoneInfo("UTC"), review_time=time(9, 0))
        for _ in range(2)
    ]  # fmt: skip
    store.save_evaluation(evaluation(state("revenue", Status.RED, at(0)), at(0)))
    clock.set(at(59))
    assert [r.tick_reminders() for r in replicas] == [0, 0]
    clock.set(at(60 * 3))  # reminders at +1h, +3h: the second one, missed ones coalesce
    assert replicas[0].tick_reminders() == 1
    assert replicas[1].tick_reminders() == 0  # the other replica sees it told
    assert store.get_state("revenue").reminders_sent == 2  # type: ignore[union-attr]
    store.ack("revenue", at(0), "ann", "on it", at(60 * 4))
    clock.set(at(60 * 30))
    assert replicas[1].tick_reminders() == 0
    [reminder] = store.events(kinds={EventKind.REMINDER})
    assert reminder.key == f"revenue:reminder:{at(0).isoformat()}:2"
    assert [(m.channel, m.target, m.state) for m in store.messages()] == [
        ("email", "ann@example.com", DeliveryState.PENDING)  # red: the owner, as a change
    ]


def test_delete_state_keeps_history(store: Store) -> None:
    store.save_evaluation(evaluation(state("revenue", Status.RED, at(0)), at(0)),
                          observations=[Observation("revenue", at(0), 1.0)])
    store.save_state(state("churn", Status.GREEN, at(0)))
    store.delete_state("revenue")
    store.delete_state("never-existed")
    assert set(store.states()) == {"churn"}
    assert len(store.history("revenue")) == 1
    assert len(store.status_changes("revenue")) == 1


def test_event_queries(store: Store) -> None:
    evs = [
        event("a", at(0)),
        event("b", at(1), EventKind.ESCALATED),
        event("c", at(2), kpi_id="churn"),
        Event(EventKind.DATA_INCIDENT, "d", at(3), source="warehouse"),
    ]
    store.save_state(state("revenue", Status.RED, at(0)), evs)
    assert [e.key for e in store.events()] == ["a", "b", "c", "d"]
    assert [e.key for e in store.events(kpi_id="revenue")] == ["a", "b"]
    assert [e.key for e in store.events(since=at(1))] == ["b", "c", "d"]
    assert [e.key for e in store.events(kinds=[EventKind.ESCALATED, EventKind.DATA_INCIDENT])] == [
        "b", "d"]
    assert [e.key for e in store.events(limit=2)] == ["c", "d"]
    assert store.events(kinds=[]) == []
    assert store.events()[3] == evs[3]


# -- outbox ------------------------------------------------------------------------


def test_outbox_flow(store: Store) -> None:
    one, two = event("one", at(0)), event("two", at(1))
    store.save_state(state("revenue", Status.RED, at(0)), [one, two],
                     {"one": [SLACK, EMAIL], "two": [SLACK]})
    assert store.pending_counts() == {"slack": 2, "email": 1}
    assert store.due_messages(at(-1)) == []
    due = store.due_messages(at(5))
    assert [(m.event.key, m.channel) for m in due] == [("one", "slack"), ("one", "email"),
                                                        ("two", "slack")]
    assert [m.event.key for m in store.due_messages(at(5), limit=1)] == ["one"]
    slack1, email1, slack2 = due

    store.mark_retry(slack1.id, at(5), error="HTTP 503 token=xoxb-123", next_attempt_at=at(10))
    assert [m.id for m in store.due_messages(at(9))] == [email1.id, slack2.id]
    assert [m.id for m in store.due_messages(at(10))] == [email1.id, slack2.id, slack1.id]

    store.mark_sent(email1.id, at(6))
    store.mark_dead(slack2.id, at(6), error="channel_not_found")
    store.mark_sent(slack1.id, at(10))
    assert store.due_messages(at(100)) == []
    assert store.pending_counts() == {}

    by_id = {m.id: m for m in store.messages()}
    assert (by_id[slack1.id].state, by_id[slack1.id].attempts) == (DeliveryState.SENT, 2)
    assert by_id[slack1.id].sent_at == at(10)
    assert by_id[slack1.id].last_error == "HTTP 503 token=***"  # secrets never stored
    assert (by_id[email1.id].state, by_id[email1.id].attempts) == (DeliveryState.SENT, 1)
    assert (by_id[slack2.id].state, by_id[slack2.id].attempts) == (DeliveryState.DEAD, 1)
    assert by_id[slack2.id].last_error == "channel_not_found"

    assert [m.id for m in store.messages(states=[DeliveryState.DEAD])] == [slack2.id]
    assert [m.event.key for m in store.messages()] == ["two", "one", "one"]  # newest first
    assert len(store.messages(limit=1)) == 1
    with pytest.raises(StoreError, match="no outbox message"):
        store.mark_sent(999_999, at(0))


# -- source health -------------------------------------------------------------------


def test_source_health(store: Store) -> None:
    assert store.source_health() == {}
    store.set_source_health("warehouse", up=True, now=at(0), error=None)
    store.set_source_health("warehouse", up=True, now=at(1), error=None)
    assert store.source_health() == {"warehouse": (True, at(0), None)}

    down = Event(EventKind.DATA_INCIDENT, "warehouse:down:1", at(2), source="warehouse")
    store.set_source_health("warehouse", up=False, now=at(2), error="password=hunter2 refused",
                            events=[down], deliveries={down.key: [SLACK]})
    store.set_source_health("warehouse", up=False, now=at(3), error="timeout")
    store.set_source_health("crm", up=True, now=at(3), error=None)
    assert store.source_health() == {
        "warehouse": (False, at(2), "timeout"),
        "crm": (True, at(3), None),
    }
    assert store.events(kinds=[EventKind.DATA_INCIDENT]) == [down]
    assert store.pending_counts() == {"slack": 1}
    # an incident's event is stored with the flip of the stored state only: a second
    # replica that saw the same outage (or its end) adds nothing
    again = Event(EventKind.DATA_INCIDENT, "warehouse:down:4", at(4), source="warehouse")
    store.set_source_health("warehouse", up=False, now=at(4), error="timeout",
                            events=[again], deliveries={again.key: [SLACK]})  # fmt: skip
    up = Event(EventKind.DATA_RECOVERED, "warehouse:up:5", at(5), source="warehouse")
    store.set_source_health("warehouse", up=True, now=at(5), error=None,
                            events=[up], deliveries={up.key: [SLACK]})  # fmt: skip
    assert [e.key for e in store.events() if e.source == "warehouse"] == [down.key, up.key]


# -- SQLite only -------------------------------------------------------------------


def test_sqlite_pragmas(sqlite_store: Store) -> None:
    with sqlite_store.engine.connect() as connection:
        pragma = connection.exec_driver_sql
        assert pragma("PRAGMA journal_mode").scalar() == "wal"
        assert pragma("PRAGMA foreign_keys").scalar() == 1
        assert pragma("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert pragma("PRAGMA busy_timeout").scalar() == 5000
        assert pragma("PRAGMA cache_size").scalar() == -512  # KiB per pooled connection


def test_sqlite_creates_the_directory(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path}/a/b/kpiwatch.db") as opened:
        assert opened.ping()
    assert (tmp_path / "a" / "b" / "kpiwatch.db").exists()


def test_in_memory_sqlite_works(tmp_path: Path) -> None:
    with Store.open("sqlite://") as opened:
        assert opened.add_observations([Observation("k", at(0), 1.0)]) == 1
    with InstanceLock("sqlite://") as lock:
        assert not lock.held  # nothing to share, nothing to lock


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from kpiwatch.store.lock import InstanceLock
    InstanceLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(60)
    """
)


def test_instance_lock_across_processes(sqlite_url: str) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, sqlite_url], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(InstanceLockedError, match=rf"\(pid {holder.pid}\).*kpiwatch\.db\.lock"):
            InstanceLock(sqlite_url).acquire()
        holder.kill()
        holder.wait(timeout=10)
        with InstanceLock(sqlite_url) as lock:  # the kernel dropped the dead holder's lock
            assert lock.held
            with pytest.raises(InstanceLockedError, match="KPIWATCH_DATABASE_URL"):
                InstanceLock(sqlite_url).acquire()  # flock is per open file, even in-process
        assert not lock.held
        with InstanceLock(sqlite_url) as again:
            assert again.held
    finally:
        holder.kill()
        holder.wait(timeout=10)


def test_instance_lock_ignores_server_databases() -> None:
    with InstanceLock("postgresql+psycopg://kw@127.0.0.1/kpiwatch") as lock:
        assert lock.path is None
        assert not lock.held


# -- an evaluation is saved only over the state it started from ----------------------


def test_an_evaluation_over_a_state_that_moved_on_is_dropped(store: Store) -> None:
    first = state("revenue", Status.GREEN, at(0))
    store.save_evaluation(evaluation(first, at(0)), based_on=Basis(None))
    # another process evaluated meanwhile: the stored state is from at(1) now
    red = state("revenue", Status.RED, at(1))
    ev = event("revenue:status_changed:1", at(1))
    store.save_evaluation(evaluation(red, at(1), (ev,)), {ev.key: [SLACK]},
                          based_on=Basis.of(first))  # fmt: skip
    # this one also started from ``first`` and would record the same transition again
    late = state("revenue", Status.RED, at(2))
    late_ev = event("revenue:status_changed:2", at(2))
    with pytest.raises(EvaluationSuperseded, match="'revenue' evaluated meanwhile"):
        store.save_evaluation(evaluation(late, at(2), (late_ev,)), {late_ev.key: [SLACK]},
                              observations=[Observation("revenue", at(2), 1.0)],
                              based_on=Basis.of(first))  # fmt: skip
    with pytest.raises(EvaluationSuperseded):
        store.save_evaluations([
            EvaluationToSave(evaluation(state("churn", Status.RED, at(2)), at(2)), {}, (),
                             Basis(None)),
            EvaluationToSave(evaluation(late, at(2), (late_ev,)), {late_ev.key: [SLACK]}, (),
                             Basis.of(first)),
        ])  # fmt: skip
    assert store.get_state("revenue") == red
    assert store.get_state("churn") is None  # all or nothing
    assert [(c.from_status, c.to_status) for c in store.status_changes("revenue")] == [
        (None, Status.GREEN), (Status.GREEN, Status.RED)]
    assert store.history("revenue") == []
    assert [m.event.key for m in store.messages()] == [ev.key]
    # a review tick over the old state would put the old status back: refused too
    with pytest.raises(EvaluationSuperseded):
        store.save_state(first._replace(next_review=at(9)), based_on=Basis.of(first))
    assert store.get_state("revenue") == red
    store.save_state(red._replace(next_review=at(9)), based_on=Basis.of(red))
    red = red._replace(next_review=at(9))
    assert store.get_state("revenue") == red
    # an evaluation taken before the stored one was (its ``now`` is older) is dropped too
    with pytest.raises(EvaluationSuperseded):
        store.save_evaluation(evaluation(state("revenue", Status.GREEN, at(1)), at(1)),
                              based_on=Basis.of(red))  # fmt: skip
    # from the stored state it goes through, and so does a save that checks nothing
    store.save_evaluation(evaluation(late, at(2)), based_on=Basis.of(red))
    store.save_evaluation(evaluation(state("revenue", Status.GREEN, at(3)), at(3)))
    assert len(store.status_changes("revenue")) == 3


@pytest.mark.postgres
def test_concurrent_evaluations_of_one_kpi_record_each_transition_once(
    postgres_url: str,
) -> None:
    """Eight writers evaluate the same KPI from the state they read, 30 rounds, the
    first one with no state yet: the row lock (or the insert, for a first state) and
    the basis check let one write per state, so the changes form one chain and each
    transition is notified once."""
    store = Store.open(postgres_url)
    errors: list[BaseException] = []
    barrier = threading.Barrier(8, timeout=30)

    def writer() -> None:
        try:
            for _ in range(30):
                barrier.wait()
                when = datetime.now(UTC)  # as the runner: the time first, then the state
                previous = store.get_state("revenue")
                flipped = Status.RED if previous is None or previous.status is Status.GREEN \
                    else Status.GREEN  # fmt: skip
                # as evaluate() does: the transition it saw is an event to notify
                ev = event(f"revenue:status_changed:{when.isoformat()}", when)
                new = evaluation(state("revenue", flipped, when), when, (ev,))
                with contextlib.suppress(EvaluationSuperseded):
                    store.save_evaluation(new, {ev.key: [SLACK]}, based_on=Basis.of(previous))
        except BaseException as exc:  # surfaced below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    changes = store.status_changes("revenue")
    notified = store.events()
    store.close()
    assert errors == []
    assert len(notified) == len(changes)  # each transition told once
    assert len(changes) >= 30  # at least one write per round, whoever won it
    assert changes[0].from_status is None
    for before, after in itertools.pairwise(changes):
        assert after.from_status == before.to_status
