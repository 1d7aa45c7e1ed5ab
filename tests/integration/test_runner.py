"""The evaluation cycle in-process: fake source, real evaluation core, real SQLite store."""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime, time, timedelta
from time import monotonic
from zoneinfo import ZoneInfo

import pytest

from kpiwatch.config.loader import load_rule_text
from kpiwatch.errors import SourceUnavailable
from kpiwatch.model import Delivery, DeliveryState, Event, EventKind, Status
from kpiwatch.notify.routing import Router
from kpiwatch.runtime.runner import Runner
from kpiwatch.runtime.workspace import Workspace, fetch_pools
from kpiwatch.store.repository import Store
from kpiwatch.testing import FakeSource, FixedClock, fake_workspace

RULES = """
sources:
  wh: {type: sql, url: "sqlite://", owner: data@example.com}
kpis:
  - id: errors
    name: Error rate
    owner: dana@example.com
    unit: "%"
    direction: lower_is_better
    source: wh
    query: SELECT 1
    review: monthly
    thresholds: {yellow: 10, red: 20}
    escalation: {stable_for: 2}
  - id: spend
    name: Spend
    owner: ava@example.com
    direction: lower_is_better
    source: wh
    query: SELECT 1
    thresholds: {red: 1000}
  - id: customers
    name: Customers
    owner: ava@example.com
    direction: higher_is_better
    source: wh
    query: SELECT 1
    thresholds: {red: 1}
  - id: cac
    name: CAC
    owner: ava@example.com
    direction: lower_is_better
    source: formula
    query: spend / customers
    thresholds: {red: 200}
"""
START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # a Monday


@pytest.fixture
def source() -> FakeSource:
    return FakeSource("wh")


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
def runner(store: Store, source: FakeSource, clock: FixedClock) -> Runner:
    workspace = fake_workspace(RULES, store.latest, {"wh": source})
    return Runner(store, clock, workspace, tz=ZoneInfo("UTC"), review_time=time(9, 0))


def test_green_first_evaluation_is_stored_without_notification(
    runner: Runner, source: FakeSource, store: Store
) -> None:
    source.set("errors", 5.0)
    evaluation = runner.evaluate_kpi("errors")
    assert evaluation is not None
    assert evaluation.status is Status.GREEN
    assert store.get_state("errors").status is Status.GREEN  # type: ignore[union-attr]
    assert store.events(kpi_id="errors") == []
    assert store.messages() == []


def test_going_red_notifies_escalates_and_writes_the_outbox_in_one_go(
    runner: Runner, source: FakeSource, store: Store, clock: FixedClock
) -> None:
    source.set("errors", 5.0)
    runner.evaluate_kpi("errors")
    clock.advance(timedelta(hours=1))
    source.set("errors", 25.0)
    evaluation = runner.evaluate_kpi("errors")
    assert evaluation is not None
    assert evaluation.status is Status.RED
    assert "value 25 % > red 20 %" in evaluation.reasons
    kinds = [e.kind for e in store.events(kpi_id="errors")]
    assert kinds == [EventKind.STATUS_CHANGED, EventKind.ESCALATED]
    state = store.get_state("errors")
    assert state is not None
    assert state.escalated
    assert state.review.value == "weekly"
    changes = store.status_changes("errors")
    assert [(c.from_status, c.to_status) for c in changes] == [
        (None, Status.GREEN),
        (Status.GREEN, Status.RED),
    ]
    outbox = store.messages(states=[DeliveryState.PENDING])
    assert {m.event.kind for m in outbox} == {EventKind.STATUS_CHANGED, EventKind.ESCALATED}
    assert all(m.channel == "log" for m in outbox)


def test_de_escalates_after_stable_green_count(
    runner: Runner, source: FakeSource, store: Store, clock: FixedClock
) -> None:
    for value in (25.0, 5.0, 5.0):
        source.set("errors", value)
        runner.evaluate_kpi("errors")
        clock.advance(timedelta(hours=1))
    kinds = [e.kind for e in store.events(kpi_id="errors")]
    assert kinds[-1] is EventKind.DE_ESCALATED
    state = store.get_state("errors")
    assert state is not None
    assert not state.escalated
    assert state.review.value == "monthly"


def test_a_failing_source_is_unknown_with_the_error_and_one_data_incident_per_outage(
    runner: Runner, source: FakeSource, store: Store, clock: FixedClock
) -> None:
    source.set("errors", 5.0)
    runner.evaluate_kpi("errors")
    for _ in range(3):
        clock.advance(timedelta(minutes=5))
        source.set("errors", SourceUnavailable("connection refused", source="wh"))
        evaluation = runner.evaluate_kpi("errors")
        assert evaluation is not None
        assert evaluation.status is Status.UNKNOWN
        assert any("connection refused" in r for r in evaluation.reasons)
    clock.advance(timedelta(minutes=5))
    source.set("errors", 5.0)
    runner.evaluate_kpi("errors")
    source_events = [e.kind for e in store.events() if e.source == "wh"]
    assert source_events == [EventKind.DATA_INCIDENT, EventKind.DATA_RECOVERED]
    up, _, _ = store.source_health()["wh"]
    assert up


def test_formula_is_evaluated_after_its_inputs(
    runner: Runner, source: FakeSource, store: Store
) -> None:
    source.set("spend", 1000.0)
    source.set("customers", 4.0)
    runner.evaluate_kpi("spend")
    runner.evaluate_kpi("customers")  # follow=True re-evaluates cac with both inputs present
    cac = store.latest("cac")
    assert cac is not None
    assert cac.value == 250.0
    assert store.get_state("cac").status is Status.RED  # type: ignore[union-attr]


def test_one_failing_kpi_never_stops_the_others(
    runner: Runner, source: FakeSource, store: Store
) -> None:
    class Exploding(Exception):
        pass

    original = source.fetch

    def fetch(kpi, now):  # type: ignore[no-untyped-def]
        if kpi.id == "spend":
            raise Exploding("a bug in a source")
        return original(kpi, now)

    source.fetch = fetch  # type: ignore[method-assign]
    source.set("errors", 5.0)
    source.set("customers", 3.0)
    stats = runner.evaluate_all()
    assert stats.evaluated == 4
    assert store.get_state("errors").status is Status.GREEN  # type: ignore[union-attr]
    spend = store.get_state("spend")
    assert spend is not None
    assert spend.status is Status.UNKNOWN
    assert "a bug in a source" in (spend.error or "")
    assert store.get_state("cac").status is Status.UNKNOWN  # type: ignore[union-attr]


def test_a_kpi_that_cannot_be_saved_does_not_lose_the_rest_of_its_batch(
    store: Store, source: FakeSource, clock: FixedClock
) -> None:
    class BadRoutes(Router):
        """Routes spend's events to a delivery the outbox refuses (no channel)."""

        def route(self, event: Event) -> list[Delivery]:
            if event.kpi_id == "spend":
                return [Delivery(None, "")]  # type: ignore[arg-type]
            return super().route(event)

    workspace = fake_workspace(RULES, store.latest, {"wh": source})
    workspace = dataclasses.replace(workspace, router=BadRoutes(workspace.rules))
    # one worker: errors, spend and customers are fetched and saved as one batch
    runner = Runner(store, clock, workspace, tz=ZoneInfo("UTC"), review_time=time(9, 0),
                    max_workers=1)  # fmt: skip
    failed: list[str] = []
    runner.on_failed = failed.append
    source.set("errors", 25.0)  # red: an event routed as usual
    source.set("spend", 5000.0)  # red: its event cannot be queued
    source.set("customers", 3.0)

    stats = runner.evaluate_all()

    assert (stats.evaluated, stats.failed, failed) == (3, 1, ["spend"])
    assert store.get_state("spend") is None  # nothing of spend's half-written
    assert store.history("spend") == []
    assert store.events(kpi_id="spend") == []
    assert store.get_state("errors").status is Status.RED  # type: ignore[union-attr]
    assert store.get_state("customers").status is Status.GREEN  # type: ignore[union-attr]
    assert [o.value for o in store.history("errors")] == [25.0]
    assert [o.value for o in store.history("customers")] == [3.0]
    assert [e.kind for e in store.events(kpi_id="errors")] == [EventKind.STATUS_CHANGED,
                                                               EventKind.ESCALATED]  # fmt: skip
    assert {m.event.kpi_id for m in store.messages()} == {"errors", "cac"}
    # evaluated after its inputs' batch: spend has no value
    assert store.get_state("cac").status is Status.UNKNOWN  # type: ignore[union-attr]


def test_a_batch_of_kpis_sees_previous_states_and_history(
    store: Store, source: FakeSource, clock: FixedClock
) -> None:
    workspace = fake_workspace(RULES, store.latest, {"wh": source})
    runner = Runner(store, clock, workspace, tz=ZoneInfo("UTC"), review_time=time(9, 0),
                    max_workers=1)  # fmt: skip
    for value in (25.0, 5.0, 5.0):  # red, then green twice: stable_for 2 de-escalates
        source.set("errors", value)
        source.set("spend", 10.0)
        source.set("customers", 3.0)
        assert runner.evaluate_all().failed == 0
        clock.advance(timedelta(hours=1))
    kinds = [e.kind for e in store.events(kpi_id="errors")]
    assert kinds == [EventKind.STATUS_CHANGED, EventKind.ESCALATED, EventKind.STATUS_CHANGED,
                     EventKind.DE_ESCALATED]  # fmt: skip
    assert [o.value for o in store.history("errors")] == [25.0, 5.0, 5.0]
    assert [o.value for o in store.history("cac")] == [10 / 3] * 3
    assert len(store.status_changes("spend")) == 1


def test_a_series_fills_history_once(
    runner: Runner, source: FakeSource, store: Store, clock: FixedClock
) -> None:
    series = [(START - timedelta(days=d), 5.0 + d) for d in range(10)]
    source.set("errors", series)
    runner.evaluate_kpi("errors")
    clock.advance(timedelta(hours=1))
    runner.evaluate_kpi("errors")
    history = store.history("errors")
    assert len(history) == 10
    assert history[-1].value == 5.0


@pytest.mark.parametrize("batched", [False, True])
def test_a_series_stores_only_what_the_retention_keeps(
    store: Store, source: FakeSource, clock: FixedClock, batched: bool
) -> None:
    """A series source returns its whole result on every poll: the rows older than the
    retention are not stored (the next prune would delete them again), and a KPI whose
    newest row is old keeps it, so its verdict stands."""
    workspace = fake_workspace(RULES, store.latest, {"wh": source})
    runner = Runner(store, clock, workspace, tz=ZoneInfo("UTC"), review_time=time(9, 0),
                    max_workers=1, retention=timedelta(days=3))  # fmt: skip
    source.set("errors", [(START - timedelta(days=d), 5.0 + d) for d in range(10)])
    source.set("spend", [(START - timedelta(days=30 * m), 2000.0 + m) for m in (1, 2, 3)])
    source.set("customers", 3.0)
    for _ in range(2):
        if batched:
            assert runner.evaluate_all().failed == 0
        else:
            for kpi_id in ("errors", "spend", "customers"):
                runner.evaluate_kpi(kpi_id, follow=False)
        clock.advance(timedelta(hours=1))
    assert [o.value for o in store.history("errors")] == [8.0, 7.0, 6.0, 5.0]  # 3 days back
    assert [o.value for o in store.history("spend")] == [2001.0]  # a month old: kept
    state = store.get_state("spend")
    assert state is not None
    assert state.status is Status.RED


def test_review_due_once_per_review_moment(
    runner: Runner, source: FakeSource, store: Store, clock: FixedClock
) -> None:
    source.set("errors", 5.0)
    runner.evaluate_kpi("errors")
    state = store.get_state("errors")
    assert state is not None
    assert state.next_review == datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
    assert runner.tick_reviews() == 0
    clock.set(datetime(2026, 4, 1, 9, 30, tzinfo=UTC))
    assert runner.tick_reviews() == 1
    assert runner.tick_reviews() == 0
    reviews = store.events(kinds=[EventKind.REVIEW_DUE])
    assert len(reviews) == 1
    assert store.get_state("errors").next_review == datetime(2026, 5, 1, 9, 0, tzinfo=UTC)  # type: ignore[union-attr]


def test_a_formula_is_not_followed_into_until_all_its_inputs_have_values(
    runner: Runner, source: FakeSource, store: Store
) -> None:
    source.set("spend", 1000.0)
    runner.evaluate_kpi("spend")
    assert store.get_state("cac") is None  # customers has no value yet: no "unknown" flap
    source.set("customers", 5.0)
    runner.evaluate_kpi("customers")
    cac = store.get_state("cac")
    assert cac is not None
    assert cac.status is Status.GREEN
    assert store.events(kpi_id="cac") == []


class HangingSource(FakeSource):
    """A source stuck in a call that never returns (until the test lets it go)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.release = threading.Event()

    def fetch(self, kpi, now):  # type: ignore[no-untyped-def]
        self.release.wait(30)
        return super().fetch(kpi, now)


def test_a_hung_source_frees_its_worker_and_does_not_delay_other_sources(
    store: Store, clock: FixedClock
) -> None:
    rules = load_rule_text(
        """
sources:
  stuck: {type: sql, url: "sqlite://", timeout: 1s, max_concurrency: 1}
  quick: {type: sql, url: "sqlite://", timeout: 1s}
kpis:
  - {id: slow, name: Slow, owner: o@example.com, direction: lower_is_better, source: stuck,
     query: SELECT 1}
  - {id: fast, name: Fast, owner: o@example.com, direction: lower_is_better, source: quick,
     query: SELECT 1}
""",
        "rules.yaml",
    )
    stuck, quick = HangingSource("stuck"), FakeSource("quick")
    quick.set("fast", 1.0)
    workspace = Workspace(
        rules, {"stuck": stuck, "quick": quick}, Router(rules.rules), fetch_pools(rules.rules)
    )
    runner = Runner(
        store, clock, workspace, tz=ZoneInfo("UTC"), review_time=time(9, 0), fetch_grace=0.5
    )
    try:
        started = monotonic()
        stats = runner.evaluate_all()
        assert monotonic() - started < 4
        assert stats.evaluated == 2
        assert store.get_state("fast").status is Status.GREEN  # type: ignore[union-attr]
        slow = store.get_state("slow")
        assert slow is not None
        assert slow.status is Status.UNKNOWN
        assert "no answer within 1.5s" in (slow.error or "")
        # its only thread is still stuck: the next fetch queues, and is abandoned in time too
        started = monotonic()
        again = runner.evaluate_kpi("slow")
        assert again is not None
        assert again.status is Status.UNKNOWN
        assert monotonic() - started < 3
    finally:
        stuck.release.set()
        workspace.close()


def test_a_kpi_still_red_when_its_mute_window_ends_is_notified_then(
    store: Store, clock: FixedClock
) -> None:
    rules = load_rule_text(
        """
sources: {wh: {type: sql, url: "sqlite://"}}
kpis:
  - {id: sales, name: Sales, owner: o@example.com, direction: higher_is_better, source: wh,
     query: SELECT 1, thresholds: {red: 10},
     mute: [{cron: "0 0 * * *", for: 2h, comment: nightly load}]}
""",
        "rules.yaml",
    )
    source = FakeSource("wh")
    workspace = Workspace(rules, {"wh": source}, Router(rules.rules))
    runner = Runner(store, clock, workspace, tz=ZoneInfo("UTC"), review_time=time(9, 0))
    clock.set(datetime(2026, 3, 3, 0, 30, tzinfo=UTC))  # inside the window
    source.set("sales", 5.0)
    runner.evaluate_kpi("sales")
    assert runner.tick_mute_ends(clock.now() - timedelta(minutes=1)) == 0  # still muted
    clock.set(datetime(2026, 3, 3, 2, 0, 30, tzinfo=UTC))  # the window closed at 02:00
    assert runner.tick_mute_ends(datetime(2026, 3, 3, 1, 59, 30, tzinfo=UTC)) == 1
    reminders = [e for e in store.events(kpi_id="sales") if "after_mute" in e.data]
    assert len(reminders) == 1
    assert reminders[0].data["to"] == "red"
    assert reminders[0].data["after_mute"] == "nightly load"


def test_a_reload_forgets_the_locks_of_removed_kpis(
    runner: Runner, source: FakeSource, store: Store
) -> None:
    """A daemon reloading renamed KPIs for months must not keep a lock per old name."""
    source.set("errors", 5.0)
    source.set("spend", 5.0)
    runner.evaluate_all(["errors", "spend"])
    assert {"errors", "spend"} <= set(runner._locks)
    smaller = RULES[: RULES.index("  - id: spend")]
    old = runner.swap(fake_workspace(smaller, store.latest, {"wh": source}))
    old.close()
    assert "spend" not in runner._locks
    assert "errors" in runner._locks
