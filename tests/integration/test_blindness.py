"""A data problem is not a verdict (SPEC §5a): the runner with a fake source, the real
evaluation core and a real SQLite store; every event and outbox row is counted."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
import structlog

from kpiwatch.errors import BadValueError, SourceError, SourceUnavailable
from kpiwatch.model import EventKind, Status
from kpiwatch.runtime.runner import Runner
from kpiwatch.store.repository import Store
from kpiwatch.testing import FakeSource, FixedClock, fake_workspace

RULES = """
sources:
  wh: {type: sql, url: "sqlite://", owner: data@example.com}
  solo: {type: sql, url: "sqlite://"}
teams:
  cs: {slack: "#cs"}
kpis:
  - id: errors
    name: Error rate
    owner: dana@example.com
    team: cs
    direction: lower_is_better
    source: wh
    query: SELECT 1
    thresholds: {yellow: 10, red: 20}
  - id: spend
    name: Spend
    owner: ava@example.com
    team: cs
    direction: lower_is_better
    source: wh
    query: SELECT 1
    thresholds: {red: 1000}
  - id: customers
    name: Customers
    owner: ava@example.com
    team: cs
    direction: higher_is_better
    source: wh
    query: SELECT 1
    thresholds: {red: 1}
  - id: cac
    name: CAC
    owner: cfo@example.com
    direction: lower_is_better
    source: formula
    query: spend / customers
    thresholds: {red: 1}
  - id: uptime
    name: Uptime
    owner: ops@example.com
    direction: higher_is_better
    source: solo
    query: SELECT 1
    thresholds: {red: 99}
"""
START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
DOWN = SourceUnavailable("cannot connect: connection refused", source="wh")


@pytest.fixture
def wh() -> FakeSource:
    return FakeSource("wh")


@pytest.fixture
def solo() -> FakeSource:
    return FakeSource("solo")


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
def runner(store: Store, wh: FakeSource, solo: FakeSource, clock: FixedClock) -> Runner:
    workspace = fake_workspace(RULES, store.latest, {"wh": wh, "solo": solo})
    return Runner(store, clock, workspace, tz=ZoneInfo("UTC"), review_time=time(9, 0),
                  blind_notice_after=timedelta(days=1))  # fmt: skip


def _healthy(wh: FakeSource, solo: FakeSource, errors: float = 25.0) -> None:
    wh.set("errors", errors)
    wh.set("spend", 10.0)
    wh.set("customers", 5.0)
    solo.set("uptime", 99.9)


def _outage(wh: FakeSource) -> None:
    """The warehouse refuses every connection from now on."""
    for kpi in ("errors", "spend", "customers"):
        wh.set(kpi, DOWN)


def _targets(store: Store, kind: EventKind) -> list[tuple[str | None, str]]:
    """(kpi, intended recipients) of every outbox row of ``kind`` (the log channel
    names whom the message was for)."""
    return [(m.event.kpi_id, m.target) for m in store.messages() if m.event.kind is kind]


def test_a_source_outage_is_one_incident_to_its_owner_and_the_episode_carries_on(
    runner: Runner, store: Store, wh: FakeSource, solo: FakeSource, clock: FixedClock
) -> None:
    _healthy(wh, solo)
    runner.evaluate_all()
    red = store.get_state("errors")
    assert red is not None
    assert red.status is Status.RED
    store.ack("errors", red.since, "dana", "on it", clock.now())
    changes_before = len(store.status_changes("errors"))
    _outage(wh)
    for _ in range(5):  # five hours of outage
        clock.advance(HOUR)
        runner.evaluate_all()
    blind = store.get_state("errors")
    assert blind is not None
    assert blind.blind
    assert (blind.status, blind.verdict, blind.since) == (Status.UNKNOWN, Status.RED, red.since)
    assert blind.data_problem is not None
    assert (blind.data_problem.scope, blind.data_problem.source) == ("source", "wh")
    assert blind.data_problem.since == START + HOUR
    assert blind.escalated_since == red.escalated_since
    assert store.ack_for("errors", blind.since) is not None
    incidents = [e for e in store.events() if e.kind is EventKind.DATA_INCIDENT]
    assert len(incidents) == 1
    assert incidents[0].kpi_id is None
    assert incidents[0].source == "wh"
    assert incidents[0].data["kpis"] == ["errors", "spend", "customers"]
    assert incidents[0].data["count"] == 3
    assert _targets(store, EventKind.DATA_INCIDENT) == [(None, "email:data@example.com")]
    kinds_during = {e.kind for e in store.events() if e.at > START}
    assert kinds_during == {EventKind.DATA_INCIDENT}  # nothing to any KPI's channel
    assert len(store.status_changes("errors")) == changes_before  # no "red -> unknown"
    assert not store.source_health()["wh"][0]

    clock.advance(HOUR)
    _healthy(wh, solo)
    runner.evaluate_all()
    back = store.get_state("errors")
    assert back is not None
    assert (back.status, back.since, back.data_problem) == (Status.RED, red.since, None)
    recovered = [e for e in store.events() if e.kind is EventKind.DATA_RECOVERED]
    assert len(recovered) == 1
    assert recovered[0].data["duration_seconds"] == 5 * 3600
    assert _targets(store, EventKind.DATA_RECOVERED) == [(None, "email:data@example.com")]
    # the same verdict sends nothing; the ack and the episode are those of before
    assert not [e for e in store.events() if e.kind is EventKind.STATUS_CHANGED and e.at > START]
    assert store.ack_for("errors", back.since) is not None
    assert store.source_health()["wh"][0]


def test_a_different_verdict_after_the_outage_is_one_change_from_the_old_verdict(
    runner: Runner, store: Store, wh: FakeSource, solo: FakeSource, clock: FixedClock
) -> None:
    _healthy(wh, solo)
    runner.evaluate_all()
    _outage(wh)
    clock.advance(HOUR)
    runner.evaluate_all()
    clock.advance(HOUR)
    _healthy(wh, solo, errors=5.0)  # green now
    runner.evaluate_all()
    changes = [e for e in store.events(kpi_id="errors") if e.kind is EventKind.STATUS_CHANGED]
    assert [(e.data["from"], e.data["to"]) for e in changes] == [(None, "red"), ("red", "green")]
    history = [(c.from_status, c.to_status) for c in store.status_changes("errors")]
    assert history == [(None, Status.RED), (Status.RED, Status.GREEN)]


def test_one_kpis_broken_query_is_told_once_to_its_owner_verbatim(
    runner: Runner, store: Store, wh: FakeSource, solo: FakeSource, clock: FixedClock
) -> None:
    _healthy(wh, solo)
    runner.evaluate_all()
    typo = SourceError("query for 'spend' failed: no such column: amount", source="wh")
    wh.set("spend", typo)
    for _ in range(4):
        clock.advance(HOUR)
        runner.evaluate_all()
    assert _targets(store, EventKind.DATA_INCIDENT) == [("spend", "email:ava@example.com")]
    notice = next(e for e in store.events() if e.kind is EventKind.DATA_INCIDENT)
    assert notice.data["scope"] == "kpi"
    assert notice.data["reason"] == str(typo)  # verbatim, no hint about read-only roles
    assert store.source_health()["wh"][0]  # the source works: no incident
    state = store.get_state("spend")
    assert state is not None
    assert state.data_problem is not None
    assert state.data_problem.scope == "kpi"
    assert state.data_problem.told_at == START + HOUR
    # a new spell after the query is fixed is told again, once
    wh.set("spend", 10.0)
    clock.advance(HOUR)
    runner.evaluate_all()
    wh.set("spend", BadValueError("query for 'spend' returned no rows", source="wh"))
    for _ in range(2):
        clock.advance(HOUR)
        runner.evaluate_all()
    assert len(_targets(store, EventKind.DATA_INCIDENT)) == 2


def test_a_single_kpi_source_with_a_bad_value_is_the_kpis_problem(
    runner: Runner, store: Store, wh: FakeSource, solo: FakeSource, clock: FixedClock
) -> None:
    _healthy(wh, solo)
    runner.evaluate_all()
    solo.set("uptime", BadValueError("query for 'uptime': value 'n/a' is not a number",
                                     source="solo"))  # fmt: skip
    for _ in range(6):  # the complaint: one pair of source_down/up a poll
        clock.advance(timedelta(seconds=10))
        runner.evaluate_kpi("uptime")
    assert [e.kind for e in store.events() if e.at > START] == [EventKind.DATA_INCIDENT]
    assert _targets(store, EventKind.DATA_INCIDENT) == [("uptime", "email:ops@example.com")]


def test_every_kpi_of_a_source_failing_is_the_sources_incident_not_each_owners(
    runner: Runner, store: Store, wh: FakeSource, solo: FakeSource, clock: FixedClock
) -> None:
    _healthy(wh, solo)
    runner.evaluate_all()
    for kpi in ("errors", "spend", "customers"):  # e.g. the schema was dropped
        wh.set(kpi, SourceError(f"query for {kpi!r} failed: no such table", source="wh"))
    clock.advance(HOUR)
    runner.evaluate_all()
    assert _targets(store, EventKind.DATA_INCIDENT) == [(None, "email:data@example.com")]
    incident = next(e for e in store.events() if e.kind is EventKind.DATA_INCIDENT)
    assert incident.data["reason"].startswith("all 3 of its KPIs fail, e.g. ")


def test_a_source_outage_is_one_log_line_per_run_not_one_per_kpi(
    runner: Runner, wh: FakeSource, solo: FakeSource, clock: FixedClock
) -> None:
    _healthy(wh, solo)
    runner.evaluate_all()
    _outage(wh)
    solo.set("uptime", SourceError("query for 'uptime' failed: no such table", source="solo"))
    clock.advance(HOUR)
    with structlog.testing.capture_logs() as logs:
        runner.evaluate_all()
    fetches = [(line["event"], line["source"], line["failed"], line["of"], line["first"])
               for line in logs if "fetch" in line["event"] and line["log_level"] != "debug"]
    assert sorted(fetches) == [
        ("fetches failed", "solo", 1, 1, "uptime"),
        ("fetches failed", "wh", 3, 3, "errors"),  # its formula is blind, not a fetch failure
    ]
    [wh_line] = [line for line in logs if line.get("source") == "wh" and "fetch" in line["event"]
                 and line["log_level"] == "warning"]  # fmt: skip
    assert wh_line["error"] == str(DOWN)


def test_a_kpi_owner_hears_of_a_long_source_outage_once_after_blind_notice_after(
    runner: Runner, store: Store, wh: FakeSource, solo: FakeSource, clock: FixedClock
) -> None:
    _healthy(wh, solo)
    runner.evaluate_all()
    _outage(wh)
    for _ in range(30):  # 30 hours: past the 1d notice, then on
        clock.advance(HOUR)
        runner.evaluate_all()
    notices = [e for e in store.events() if e.kind is EventKind.DATA_INCIDENT and e.kpi_id]
    # the formula over them too: its inputs' source is the one to blame
    assert sorted(e.kpi_id or "" for e in notices) == ["cac", "customers", "errors", "spend"]
    assert {e.at for e in notices} == {START + 25 * HOUR}  # 1d after the spell began
    for notice in notices:
        told = notice.data
        assert (told["scope"], told["source"]) == ("source", "wh")
        assert told["data_owner"] == "data@example.com"
        assert told["data_owner_told"] == (START + HOUR).isoformat()
    targets = _targets(store, EventKind.DATA_INCIDENT)
    assert len(targets) == 5
    assert set(targets) == {
        (None, "email:data@example.com"),
        ("cac", "email:cfo@example.com"),
        ("customers", "email:ava@example.com"),
        ("errors", "email:dana@example.com"),
        ("spend", "email:ava@example.com"),
    }


def test_a_formula_over_a_blind_input_is_blind_and_keeps_no_value_from_old_inputs(
    runner: Runner, store: Store, wh: FakeSource, solo: FakeSource, clock: FixedClock
) -> None:
    _healthy(wh, solo)
    runner.evaluate_all()
    cac = store.get_state("cac")
    assert cac is not None
    assert (cac.status, cac.value) == (Status.RED, 2.0)
    _outage(wh)
    clock.advance(HOUR)
    runner.evaluate_all()
    blind = store.get_state("cac")
    assert blind is not None
    assert (blind.status, blind.verdict, blind.since) == (Status.UNKNOWN, Status.RED, cac.since)
    assert blind.data_problem is not None
    assert blind.data_problem.scope == "source"  # not the formula owner's to fix
    assert blind.data_problem.source == "wh"
    assert blind.reasons[0].startswith("input 'customers' (and 1 more) has no fresh data: ")
    assert [o.observed_at for o in store.history("cac")] == [START]  # nothing computed
    assert not [e for e in store.events(kpi_id="cac") if e.at > START]
    clock.advance(HOUR)
    _healthy(wh, solo)
    runner.evaluate_all()
    back = store.get_state("cac")
    assert back is not None
    assert (back.status, back.since, back.data_problem) == (Status.RED, cac.since, None)
