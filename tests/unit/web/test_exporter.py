"""The Prometheus exporter against a real SQLite store filled by the real runner and outbox.

Every test scrapes with ``generate_latest`` and reads the text back with the
official parser, as Prometheus would.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from kpiwatch import __version__
from kpiwatch.config.loader import load_rule_text
from kpiwatch.config.rules import RuleSet
from kpiwatch.errors import DeliveryError, SourceError, StoreError
from kpiwatch.notify.notices import NoticeBuilder
from kpiwatch.notify.outbox import Outbox
from kpiwatch.runtime.runner import Runner
from kpiwatch.runtime.workspace import Workspace
from kpiwatch.store.repository import Store
from kpiwatch.testing import FakeSource, FixedClock, RecordingChannel, fake_workspace
from kpiwatch.web.exporter import Metrics, build_registry

QUOTED_NAME = 'Say "hi"\nback\\slash'
KPIS = """
  - id: signups
    name: Weekly signups
    owner: ava@example.com
    team: growth
    direction: higher_is_better
    source: wh
    query: SELECT 1
    thresholds: {yellow: 100, red: 80}
    target: {value: 150, by: 2026-12-31, baseline: 100, baseline_date: 2026-01-01}
  - id: quoted
    name: "Say \\"hi\\"\\nback\\\\slash"
    owner: eve@example.com
    unit: "%"
    direction: lower_is_better
    source: wh
    query: SELECT 1
  - id: arr
    name: ARR
    owner: fin@example.com
    team: growth
    direction: higher_is_better
    source: wh
    query: SELECT 1
    review: weekly
    target: {value: 10, by: 2026-12-31}
"""
REMOVABLE = """
  - id: churn
    name: Churn rate
    owner: ben@example.com
    team: growth
    unit: "%"
    direction: lower_is_better
    source: wh
    query: SELECT 1
    thresholds: {yellow: 3, red: 5}
    target: {value: 2}
  - id: uptime
    name: Uptime
    owner: cy@example.com
    direction: higher_is_better
    source: crm
    query: SELECT 1
    review: daily
    thresholds: {red: 99}
"""
RULES = f"""
sources:
  wh: {{type: sql, url: "sqlite://"}}
  crm: {{type: sql, url: "sqlite://"}}
teams:
  growth: {{}}
kpis:{KPIS}{REMOVABLE}"""
FEWER_RULES = f"""
sources:
  wh: {{type: sql, url: "sqlite://"}}
teams:
  growth: {{}}
kpis:{KPIS}"""
NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
EARLIER = NOW - timedelta(hours=2)
STATUS_WORDS = ("green", "yellow", "red", "unknown")
SPEC_FAMILIES = {
    "kpiwatch_kpi_value",
    "kpiwatch_kpi_target",
    "kpiwatch_kpi_threshold",
    "kpiwatch_kpi_status",
    "kpiwatch_kpi_escalated",
    "kpiwatch_kpi_review_interval_seconds",
    "kpiwatch_kpi_last_evaluation_timestamp_seconds",
    "kpiwatch_kpi_info",
    "kpiwatch_source_up",
    "kpiwatch_source_query_duration_seconds",
    "kpiwatch_evaluations",  # the parser names counters without _total
    "kpiwatch_notifications",
    "kpiwatch_outbox_pending",
    "kpiwatch_build_info",
}


@dataclass
class Daemon:
    store: Store
    runner: Runner
    metrics: Metrics
    registry: CollectorRegistry
    clock: FixedClock
    rules: list[RuleSet]  # [the rules running now]; a test swaps them like a reload

    def scrape(self) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        """family -> {sorted labels: value}, read back from the text exposition."""
        return _parse(generate_latest(self.registry).decode())


def _parse(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        series = found.setdefault(family.name, {})
        for sample in family.samples:
            series[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def _workspace(text: str, store: Store, source: FakeSource) -> Workspace:
    sources = {"wh": source, "crm": source}
    return fake_workspace(text, store.latest, sources, channels=frozenset({"email", "log"}))


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    store = Store.open(f"sqlite:///{tmp_path}/state.db")
    clock = FixedClock(EARLIER)
    source = FakeSource("wh")
    workspace = _workspace(RULES, store, source)
    runner = Runner(store, clock, workspace, tz=ZoneInfo("UTC"), review_time=time(9, 0))
    metrics = Metrics(["email", "log", "slack"])
    runner.on_evaluated = metrics.evaluated
    runner.on_fetched = metrics.fetched
    rules = [workspace.rules]
    registry = build_registry(store, lambda: rules[0], metrics, clock=clock, tz=ZoneInfo("UTC"))
    for kpi_id, value in {"signups": 130.0, "quoted": 1.5, "churn": 2.5, "uptime": 99.95}.items():
        source.set(kpi_id, value)
        runner.evaluate_kpi(kpi_id)
    clock.set(NOW)
    source.set("churn", 6.2)  # red: escalated, reviewed weekly
    source.set("uptime", SourceError("connection refused", source="crm"))
    runner.evaluate_kpi("churn")
    runner.evaluate_kpi("uptime")
    yield Daemon(store, runner, metrics, registry, clock, rules)
    store.close()


def kpi(kpi_id: str, team: str = "growth", **more: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"kpi": kpi_id, "team": team, **more}.items()))


def test_only_the_spec_families_and_nothing_from_the_default_registry(daemon: Daemon) -> None:
    text = generate_latest(daemon.registry).decode()
    assert {f.name for f in text_string_to_metric_families(text)} == SPEC_FAMILIES
    assert "python_gc" not in text
    assert "process_" not in text
    assert "_created" not in text  # counters without OpenMetrics' creation-time series


def test_openmetrics_exposition_parses_with_the_strict_parser(daemon: Daemon) -> None:
    # /metrics negotiates: Prometheus may ask for OpenMetrics instead of the text format
    families = list(parse_openmetrics(generate_openmetrics(daemon.registry).decode()))
    assert {f.name for f in families} == SPEC_FAMILIES


def test_values_status_and_state_come_from_the_evaluations(daemon: Daemon) -> None:
    m = daemon.scrape()
    assert m["kpiwatch_kpi_value"] == {
        kpi("signups"): 130.0,
        kpi("quoted", ""): 1.5,
        kpi("churn"): 6.2,
    }  # uptime has no value since its source failed; arr was never evaluated
    statuses = m["kpiwatch_kpi_status"]
    expected = {"signups": "green", "quoted": "green", "churn": "red"}
    expected |= {"uptime": "unknown", "arr": "unknown"}
    for kpi_id, current in expected.items():
        team = "" if kpi_id in ("quoted", "uptime") else "growth"
        one_hot = {s: statuses[kpi(kpi_id, team, status=s)] for s in STATUS_WORDS}
        assert one_hot == {s: float(s == current) for s in STATUS_WORDS}, kpi_id
    assert m["kpiwatch_kpi_escalated"][kpi("churn")] == 1.0
    assert m["kpiwatch_kpi_escalated"][kpi("signups")] == 0.0
    assert m["kpiwatch_kpi_escalated"][kpi("arr")] == 0.0
    assert m["kpiwatch_kpi_review_interval_seconds"] == {
        kpi("signups"): 2_629_746.0,  # monthly (the default): 365.2425 / 12 days
        kpi("quoted", ""): 2_629_746.0,
        kpi("churn"): 604_800.0,  # escalated: weekly instead of monthly
        kpi("uptime", ""): 86_400.0,
        kpi("arr"): 604_800.0,  # never evaluated: its configured cadence
    }
    assert m["kpiwatch_kpi_last_evaluation_timestamp_seconds"] == {
        kpi("signups"): EARLIER.timestamp(),
        kpi("quoted", ""): EARLIER.timestamp(),
        kpi("churn"): NOW.timestamp(),
        kpi("uptime", ""): NOW.timestamp(),
    }


def test_targets_thresholds_and_info_come_from_the_rules(daemon: Daemon) -> None:
    m = daemon.scrape()
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 12, 31, tzinfo=UTC)
    glide = 100 + 50 * (NOW - start) / (end - start)
    targets = m["kpiwatch_kpi_target"]
    assert targets.keys() == {kpi("signups"), kpi("churn"), kpi("arr")}
    assert targets[kpi("signups")] == pytest.approx(glide)
    assert targets[kpi("churn")] == 2.0
    assert targets[kpi("arr")] == 10.0  # no baseline in the rules: the final target
    assert m["kpiwatch_kpi_threshold"] == {
        kpi("signups", severity="yellow"): 100.0,
        kpi("signups", severity="red"): 80.0,
        kpi("churn", severity="yellow"): 3.0,
        kpi("churn", severity="red"): 5.0,
        kpi("uptime", "", severity="red"): 99.0,
    }
    info = m["kpiwatch_kpi_info"]
    churn = (("direction", "lower_is_better"), ("kpi", "churn"), ("name", "Churn rate"),
             ("owner", "ben@example.com"), ("team", "growth"), ("unit", "%"))  # fmt: skip
    assert info[churn] == 1.0
    assert len(info) == 5
    assert set(info.values()) == {1.0}
    assert m["kpiwatch_build_info"] == {(("version", __version__),): 1.0}


def test_glide_target_moves_with_the_clock(daemon: Daemon) -> None:
    before = daemon.scrape()["kpiwatch_kpi_target"][kpi("signups")]
    daemon.clock.set(datetime(2026, 7, 1, tzinfo=UTC))
    after = daemon.scrape()["kpiwatch_kpi_target"][kpi("signups")]
    daemon.clock.set(datetime(2027, 1, 1, tzinfo=UTC))
    assert before < after < 150.0
    assert daemon.scrape()["kpiwatch_kpi_target"][kpi("signups")] == 150.0


def test_help_says_kpi_values_are_cached_evaluation_results(daemon: Daemon) -> None:
    helps = {
        f.name: f.documentation
        for f in text_string_to_metric_families(generate_latest(daemon.registry).decode())
    }
    assert helps["kpiwatch_kpi_value"] == (
        "Latest KPI value kpiwatch evaluated (cached; a scrape never queries sources)"
    )
    for name in ("kpiwatch_kpi_status", "kpiwatch_kpi_last_evaluation_timestamp_seconds",
                 "kpiwatch_source_up"):  # fmt: skip
        assert "cached; a scrape never queries sources" in helps[name]


def test_label_values_with_quotes_newlines_and_backslashes_round_trip(daemon: Daemon) -> None:
    text = generate_latest(daemon.registry).decode()
    assert 'name="Say \\"hi\\"\\nback\\\\slash"' in text
    info = next(f for f in text_string_to_metric_families(text) if f.name == "kpiwatch_kpi_info")
    names = {s.labels["kpi"]: s.labels["name"] for s in info.samples}
    assert names["quoted"] == QUOTED_NAME


def test_sources_health_and_last_query_duration(daemon: Daemon) -> None:
    m = daemon.scrape()
    assert m["kpiwatch_source_up"] == {(("source", "wh"),): 1.0, (("source", "crm"),): 0.0}
    durations = m["kpiwatch_source_query_duration_seconds"]
    assert durations.keys() == {(("source", "wh"),), (("source", "crm"),)}
    assert all(0 <= seconds < 5 for seconds in durations.values())


def test_a_source_without_recorded_health_is_omitted(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path}/fresh.db") as store:
        rules = load_rule_text(RULES, "rules.yaml").rules
        registry = build_registry(store, lambda: rules, Metrics([]), clock=FixedClock(NOW))
        m = _parse(generate_latest(registry).decode())
    assert m["kpiwatch_source_up"] == {}
    assert m["kpiwatch_source_query_duration_seconds"] == {}
    assert m["kpiwatch_kpi_value"] == {}
    assert m["kpiwatch_kpi_status"][kpi("churn", status="unknown")] == 1.0


def test_evaluation_counters_by_status_with_every_result_precreated(daemon: Daemon) -> None:
    evaluations = daemon.scrape()["kpiwatch_evaluations"]
    assert evaluations == {
        (("result", "green"),): 4.0,
        (("result", "yellow"),): 0.0,
        (("result", "red"),): 1.0,
        (("result", "unknown"),): 1.0,
        (("result", "error"),): 0.0,
    }
    daemon.metrics.evaluation_failed("churn")
    assert daemon.scrape()["kpiwatch_evaluations"][(("result", "error"),)] == 1.0


def test_notifications_start_at_zero_and_count_the_outbox_results(daemon: Daemon) -> None:
    m = daemon.scrape()
    assert m["kpiwatch_notifications"] == {
        (("channel", c), ("result", r)): 0.0
        for c in ("email", "log", "slack")
        for r in ("sent", "dead")
    }
    pending = daemon.store.pending_counts()
    assert pending.get("email", 0) > 0
    assert pending.get("log", 0) > 0
    assert m["kpiwatch_outbox_pending"] == {
        (("channel", "email"),): float(pending["email"]),
        (("channel", "log"),): float(pending["log"]),
        (("channel", "slack"),): 0.0,  # configured, nothing waiting
    }
    email = RecordingChannel("email")
    # "log" is not given to the outbox: its messages go dead, as with a channel removed
    notices = NoticeBuilder(daemon.store, lambda: daemon.rules[0], "http://kpiwatch")
    outbox = Outbox(daemon.store, {"email": email}, daemon.clock, notices)
    outbox.on_result = daemon.metrics.delivered
    outbox.deliver_due()
    m = daemon.scrape()
    notifications = m["kpiwatch_notifications"]
    assert notifications[(("channel", "email"), ("result", "sent"))] == len(email.sent)
    assert len(email.sent) == pending["email"]
    assert notifications[(("channel", "log"), ("result", "dead"))] == pending["log"]
    assert set(m["kpiwatch_outbox_pending"].values()) == {0.0}


def test_retried_and_suppressed_appear_when_first_counted(daemon: Daemon) -> None:
    email = RecordingChannel("email")
    email.fail_with(lambda notice: DeliveryError("smtp down", channel="email", retryable=True))
    notices = NoticeBuilder(daemon.store, lambda: daemon.rules[0], "http://kpiwatch")
    outbox = Outbox(daemon.store, {"email": email, "log": RecordingChannel("log")}, daemon.clock,
                    notices)  # fmt: skip
    outbox.on_result = daemon.metrics.delivered
    outbox.deliver_due()
    notifications = daemon.scrape()["kpiwatch_notifications"]
    assert notifications[(("channel", "email"), ("result", "retried"))] >= 1.0
    assert (("channel", "slack"), ("result", "retried")) not in notifications


def test_removed_kpis_and_sources_disappear_at_the_next_scrape(daemon: Daemon) -> None:
    before = generate_latest(daemon.registry).decode()
    assert 'kpi="churn"' in before
    assert 'source="crm"' in before
    daemon.rules[0] = load_rule_text(FEWER_RULES, "rules.yaml").rules  # a reload
    after = generate_latest(daemon.registry).decode()
    assert daemon.store.get_state("churn") is not None  # still stored, no longer exported
    for gone in ('kpi="churn"', 'kpi="uptime"', 'source="crm"'):
        assert gone not in after
    m = _parse(after)
    assert {dict(k)["kpi"] for k in m["kpiwatch_kpi_info"]} == {"signups", "quoted", "arr"}
    assert m["kpiwatch_source_up"] == {(("source", "wh"),): 1.0}


def test_a_store_failure_fails_the_scrape_and_is_logged(daemon: Daemon) -> None:
    with daemon.store.engine.begin() as connection:
        connection.execute(sa.text("DROP TABLE kpi_state"))
    with capture_logs() as logs, pytest.raises(StoreError, match="read states"):
        generate_latest(daemon.registry)
    assert any(e["log_level"] == "error" and "metrics scrape failed" in e["event"] for e in logs)


def test_registries_are_independent_and_refuse_clashing_collectors(daemon: Daemon) -> None:
    other = build_registry(daemon.store, lambda: daemon.rules[0], Metrics([]))
    assert "kpiwatch_kpi_value" in generate_latest(other).decode()
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Gauge("kpiwatch_kpi_value", "clash", registry=daemon.registry)


def test_metrics_hooks_are_thread_safe() -> None:
    metrics = Metrics(["email"])

    def work() -> None:
        for _ in range(2_000):
            metrics.delivered("email", "sent")
            metrics.fetched("wh", 0.5)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    _, notifications, seconds = metrics.snapshot()
    assert notifications[("email", "sent")] == 16_000
    assert notifications[("email", "dead")] == 0
    assert seconds == {"wh": 0.5}
