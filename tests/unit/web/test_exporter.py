"""The Prometheus exporter against a real SQLite store filled by the real runner and outbox.

Every test scrapes with ``generate_latest`` and reads the text back with the
official parser, as Prometheus would.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from structlog.testing import capture_logs

from kpiwatch import __version__
from kpiwatch.config.loader import load_rule_text
from kpiwatch.config.rules import Kpi, RuleSet
from kpiwatch.errors import DeliveryError, SourceError, SourceUnavailable, StoreError
from kpiwatch.model import DataProblem, KpiState, Observation, ReviewCadence, Status
from kpiwatch.notify.notices import NoticeBuilder
from kpiwatch.notify.outbox import Outbox
from kpiwatch.runtime.runner import Runner
from kpiwatch.runtime.workspace import Workspace
from kpiwatch.sources.base import FetchResult
from kpiwatch.store.repository import Store
from kpiwatch.store.snapshot import ShownState, StateSnapshots
from kpiwatch.testing import FakeSource, FixedClock, RecordingChannel, fake_workspace
from kpiwatch.web.exporter import KpiCollector, Metrics, build_registry, render

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
    "kpiwatch_kpi_blind",
    "kpiwatch_kpi_review_interval_seconds",
    "kpiwatch_kpi_last_evaluation_timestamp_seconds",
    "kpiwatch_kpi_info",
    "kpiwatch_source_up",
    "kpiwatch_source_incident",
    "kpiwatch_source_query_duration_seconds",
    "kpiwatch_evaluations",  # the parser names counters without _total
    "kpiwatch_notifications",
    "kpiwatch_reminders",
    "kpiwatch_outbox_pending",
    "kpiwatch_schedule_lag_seconds",
    "kpiwatch_evaluations_skipped",
    "kpiwatch_pruned_rows",  # not in the SPEC's list: the retention's deletes
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
    source: FakeSource  # what wh and crm answer next

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
    # crm itself fails: its data incident opens (told to on-call, here the log) and uptime,
    # its only KPI, is blind: unknown, its green verdict and its last value 99.95 kept
    source.set("uptime", SourceUnavailable("connection refused", source="crm"))
    runner.evaluate_kpi("churn")
    runner.evaluate_kpi("uptime")
    yield Daemon(store, runner, metrics, registry, clock, rules, source)
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
    uptime = daemon.store.get_state("uptime")
    assert uptime is not None
    assert uptime.blind
    assert uptime.value == 99.95  # kept for the board, not exported
    m = daemon.scrape()
    assert m["kpiwatch_kpi_value"] == {
        kpi("signups"): 130.0,
        kpi("quoted", ""): 1.5,
        kpi("churn"): 6.2,
    }  # uptime is unknown since its source failed (as in 0.1); arr was never evaluated
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
    assert m["kpiwatch_kpi_blind"] == {
        kpi("signups"): 0.0,
        kpi("quoted", ""): 0.0,
        kpi("churn"): 0.0,
        kpi("uptime", ""): 1.0,
        kpi("arr"): 0.0,  # never evaluated: unknown, but nobody's data problem
    }
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
    # crm's incident is open (it failed as a whole); wh works
    assert m["kpiwatch_source_up"] == {(("source", "wh"),): 1.0, (("source", "crm"),): 0.0}
    assert m["kpiwatch_source_incident"] == {
        (("source", "wh"),): 0.0,
        (("source", "crm"),): 1.0,
    }
    durations = m["kpiwatch_source_query_duration_seconds"]
    assert durations.keys() == {(("source", "wh"),), (("source", "crm"),)}
    assert all(0 <= seconds < 5 for seconds in durations.values())


def test_a_source_without_recorded_health_is_omitted(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path}/fresh.db") as store:
        rules = load_rule_text(RULES, "rules.yaml").rules
        registry = build_registry(store, lambda: rules, Metrics([]), clock=FixedClock(NOW))
        m = _parse(generate_latest(registry).decode())
    assert m["kpiwatch_source_up"] == {}
    # every declared source, no incident yet
    assert m["kpiwatch_source_incident"] == {(("source", "wh"),): 0.0, (("source", "crm"),): 0.0}
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
    assert m["kpiwatch_source_incident"] == {(("source", "wh"),): 0.0}


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


# -- render(): /metrics' fast path writes what prometheus_client writes ----------------

AWKWARD_RULES = """
sources:
  wh: {type: sql, url: "sqlite://"}
teams:
  growth: {}
kpis:
  - id: quotes
    name: "Say \\"hi\\" \\\\ back\\nslash"
    owner: "Ann \\"The Boss\\" <ann@example.com>"
    unit: "€/h"
    team: growth
    direction: higher_is_better
    source: wh
    query: SELECT 1
    thresholds: {yellow: 0.1, red: 1e-7}
    target: {value: 12345678.9, by: 2026-12-31, baseline: 1.5e16, baseline_date: 2026-01-01}
  - id: unicode
    name: "Umsatz – Größe 日本の売上 🚀"
    owner: "zoë@example.com"
    unit: "%"
    direction: lower_is_better
    source: wh
    query: SELECT 1
    review: daily
    thresholds: {red: 123456789.25}
    target: {value: -0.5}
  - id: infinite
    name: Infinite
    owner: ops@example.com
    team: growth
    direction: higher_is_better
    source: wh
    query: SELECT 1
    target: {value: 10, by: 2027-06-30}
  - id: unknown
    name: Unknown
    owner: ops@example.com
    direction: higher_is_better
    source: wh
    query: SELECT 1
  - id: never
    name: "Never \\\\ evaluated"
    owner: ops@example.com
    team: growth
    direction: higher_is_better
    source: wh
    query: SELECT 1
    review: weekly
"""
EVALUATED = NOW - timedelta(minutes=3, microseconds=123457)
AWKWARD_STATES = (
    KpiState("quotes", Status.RED, EARLIER, ReviewCadence.WEEKLY, value=123456789.25,
             last_evaluated=EVALUATED, escalated_since=EARLIER),
    KpiState("unicode", Status.YELLOW, EARLIER, ReviewCadence.DAILY, value=-1.5e-7,
             last_evaluated=EVALUATED),
    KpiState("infinite", Status.GREEN, EARLIER, ReviewCadence.MONTHLY, value=math.inf,
             last_evaluated=EARLIER),
    # blind: its source times out; the red verdict's episode and last value are kept
    KpiState("unknown", Status.UNKNOWN, EARLIER, ReviewCadence.MONTHLY, value=42.0,
             error="timeout", verdict=Status.RED,
             data_problem=DataProblem(EVALUATED, "timeout", "source", "wh")),
)  # fmt: skip
# Accept headers and what choose_encoder makes of them
ACCEPTS = {
    "none: text 0.0.4": "",
    "Prometheus 2: OpenMetrics 1.0.0": (
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
        "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    ),
    "Prometheus 3: OpenMetrics, allow-utf-8": (
        "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
        "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,*/*;q=0.2"
    ),
    "text 1.0.0": "text/plain;version=1.0.0;escaping=underscores",
    "OpenMetrics, dots: registry path": "application/openmetrics-text;version=1.0.0;escaping=dots",
    "text, values": "text/plain;version=1.0.0;escaping=values",
}


@dataclass
class Exporter:
    store: Store
    registry: CollectorRegistry
    rules: list[RuleSet]
    clock: FixedClock

    def render(self, accept: str = "") -> bytes:
        """What /metrics answers (render()), checked against the registry path."""
        encoder = choose_encoder(accept)[0]
        fast = render(self.registry, encoder)
        assert fast == encoder(self.registry)
        return fast

    def scrape(self) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        return _parse(self.render().decode())


@pytest.fixture
def exporter(tmp_path: Path) -> Iterator[Exporter]:
    store = Store.open(f"sqlite:///{tmp_path}/state.db")
    for state in AWKWARD_STATES:
        store.save_state(state)
    store.set_source_health("wh", up=False, now=NOW, error="refused")
    metrics = Metrics(["email", "slack"])
    metrics.fetched("wh", 0.25)
    metrics.delivered("email", "retried")
    rules = [load_rule_text(AWKWARD_RULES, "rules.yaml").rules]
    clock = FixedClock(NOW)
    registry = build_registry(store, lambda: rules[0], metrics, clock=clock, tz=ZoneInfo("UTC"))
    yield Exporter(store, registry, rules, clock)
    store.close()


@pytest.mark.parametrize("accept", ACCEPTS.values(), ids=ACCEPTS.keys())
def test_render_writes_the_bytes_the_negotiated_encoder_writes(
    exporter: Exporter, accept: str
) -> None:
    for _ in range(2):  # cold, then from the caches
        exporter.render(accept)  # asserts byte equality with encoder(registry)


FAST = [k for k in ACCEPTS if "registry path" not in k]


@pytest.mark.parametrize("accept", [ACCEPTS[k] for k in FAST], ids=FAST)
def test_the_encoders_prometheus_asks_for_take_the_fast_path(
    exporter: Exporter, accept: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoder = choose_encoder(accept)[0]
    expected = encoder(exporter.registry)

    def registry_path(self: KpiCollector) -> Iterator[Metric]:
        raise AssertionError("render() took the registry path")

    monkeypatch.setattr(KpiCollector, "collect", registry_path)
    assert render(exporter.registry, encoder) == expected
    dots = choose_encoder(ACCEPTS["OpenMetrics, dots: registry path"])[0]
    with pytest.raises(AssertionError, match="registry path"):
        render(exporter.registry, dots)


def test_render_and_the_registry_parse_to_the_same_samples(exporter: Exporter) -> None:
    def samples(families: Iterable[Metric]) -> list[tuple[str, str, list[Sample]]]:
        return [(f.name, f.documentation, f.samples) for f in families]

    registry = exporter.registry
    fast = render(registry, choose_encoder("")[0]).decode()
    slow = generate_latest(registry).decode()
    assert samples(text_string_to_metric_families(fast)) == (
        samples(text_string_to_metric_families(slow))
    )
    fast = render(registry, choose_encoder(ACCEPTS["Prometheus 2: OpenMetrics 1.0.0"])[0]).decode()
    slow = generate_openmetrics(registry).decode()
    assert samples(parse_openmetrics(fast)) == samples(parse_openmetrics(slow))
    info = {s.labels["kpi"]: s.labels for s in _family_of(exporter, "kpiwatch_kpi_info").samples}
    assert info["quotes"]["name"] == 'Say "hi" \\ back\nslash'
    assert info["quotes"]["owner"] == 'Ann "The Boss" <ann@example.com>'
    assert info["unicode"]["name"] == "Umsatz – Größe 日本の売上 🚀"
    values = exporter.scrape()["kpiwatch_kpi_value"]
    assert values[kpi("quotes")] == 123456789.25
    assert values[kpi("infinite")] == math.inf
    assert values[kpi("unicode", "")] == -1.5e-7


def _family_of(exporter: Exporter, name: str) -> Metric:
    text = exporter.render().decode()
    return next(f for f in text_string_to_metric_families(text) if f.name == name)


def test_a_state_written_behind_the_exporters_back_shows_at_the_next_scrape(
    exporter: Exporter,
) -> None:
    before = exporter.scrape()
    assert before["kpiwatch_kpi_value"][kpi("quotes")] == 123456789.25
    # as another replica would: same evaluation time, so no "changed since" marker helps
    quotes = exporter.store.get_state("quotes")
    assert quotes is not None
    exporter.store.save_state(quotes._replace(
        status=Status.GREEN, value=7.5, escalated_since=None, review=ReviewCadence.MONTHLY
    ))  # fmt: skip
    after = exporter.scrape()
    assert after["kpiwatch_kpi_value"][kpi("quotes")] == 7.5
    assert after["kpiwatch_kpi_status"][kpi("quotes", status="green")] == 1.0
    assert after["kpiwatch_kpi_status"][kpi("quotes", status="red")] == 0.0
    assert after["kpiwatch_kpi_escalated"][kpi("quotes")] == 0.0
    assert after["kpiwatch_kpi_review_interval_seconds"][kpi("quotes")] == 2_629_746.0
    unchanged = ("kpiwatch_kpi_value", "kpiwatch_kpi_last_evaluation_timestamp_seconds")
    for family in unchanged:
        others = {k: v for k, v in after[family].items() if dict(k)["kpi"] != "quotes"}
        assert others == {k: v for k, v in before[family].items() if dict(k)["kpi"] != "quotes"}


def test_a_first_state_and_a_deleted_state_show_at_the_next_scrape(exporter: Exporter) -> None:
    exporter.scrape()
    exporter.store.save_state(
        KpiState("never", Status.YELLOW, NOW, ReviewCadence.DAILY, value=3.0, last_evaluated=NOW)
    )
    exporter.store.delete_state("quotes")
    m = exporter.scrape()
    assert m["kpiwatch_kpi_value"][kpi("never")] == 3.0
    assert m["kpiwatch_kpi_status"][kpi("never", status="yellow")] == 1.0
    assert m["kpiwatch_kpi_last_evaluation_timestamp_seconds"][kpi("never")] == NOW.timestamp()
    # quotes is back to "never evaluated": unknown, not escalated, its configured cadence
    assert kpi("quotes") not in m["kpiwatch_kpi_value"]
    assert kpi("quotes") not in m["kpiwatch_kpi_last_evaluation_timestamp_seconds"]
    assert m["kpiwatch_kpi_status"][kpi("quotes", status="unknown")] == 1.0
    assert m["kpiwatch_kpi_escalated"][kpi("quotes")] == 0.0
    assert m["kpiwatch_kpi_review_interval_seconds"][kpi("quotes")] == 2_629_746.0


def test_a_reload_shows_changed_rules_and_drops_removed_kpis(exporter: Exporter) -> None:
    before = exporter.render()
    exporter.rules[0] = load_rule_text(AWKWARD_RULES, "rules.yaml").rules  # equal, not the same
    assert exporter.render() == before
    changed = AWKWARD_RULES.replace("thresholds: {red: 123456789.25}", "thresholds: {red: 99}")
    changed = changed.replace("name: Infinite", "name: Endless")
    changed = changed.replace("- id: never", "- id: gone")
    exporter.rules[0] = load_rule_text(changed, "rules.yaml").rules
    m = exporter.scrape()
    assert m["kpiwatch_kpi_threshold"][kpi("unicode", "", severity="red")] == 99.0
    names = {dict(k)["kpi"]: dict(k)["name"] for k in m["kpiwatch_kpi_info"]}
    assert names["infinite"] == "Endless"
    assert "never" not in names
    assert m["kpiwatch_kpi_status"][kpi("gone", status="unknown")] == 1.0
    assert m["kpiwatch_kpi_value"][kpi("quotes")] == 123456789.25  # states still shown


def test_states_changed_around_a_reload_show_after_it(exporter: Exporter) -> None:
    exporter.scrape()
    quotes = exporter.store.get_state("quotes")
    assert quotes is not None
    exporter.store.save_state(quotes._replace(value=1.25))
    # an equal rule set (every KPI's lines carried over), then one that changes a KPI
    # and removes another (only the unchanged ones carried over)
    exporter.rules[0] = load_rule_text(AWKWARD_RULES, "rules.yaml").rules
    assert exporter.scrape()["kpiwatch_kpi_value"][kpi("quotes")] == 1.25
    exporter.store.save_state(quotes._replace(value=2.5, escalated_since=None))
    changed = AWKWARD_RULES.replace("name: Infinite", "name: Endless")
    exporter.rules[0] = load_rule_text(changed.replace("- id: unknown", "- id: later"), "r").rules
    exporter.store.save_state(KpiState("later", Status.RED, NOW, ReviewCadence.DAILY, value=4.0))
    m = exporter.scrape()
    assert m["kpiwatch_kpi_value"][kpi("quotes")] == 2.5
    assert m["kpiwatch_kpi_escalated"][kpi("quotes")] == 0.0
    assert m["kpiwatch_kpi_value"][kpi("infinite")] == math.inf
    assert m["kpiwatch_kpi_value"][kpi("later", "")] == 4.0
    assert m["kpiwatch_kpi_status"][kpi("later", "", status="red")] == 1.0
    assert all(dict(k)["kpi"] != "unknown" for k in m["kpiwatch_kpi_status"])


def test_glide_targets_follow_the_clock_on_the_fast_path(exporter: Exporter) -> None:
    first = exporter.scrape()["kpiwatch_kpi_target"][kpi("quotes")]
    exporter.clock.set(NOW + timedelta(days=30))
    assert exporter.scrape()["kpiwatch_kpi_target"][kpi("quotes")] < first  # falls to 1.2e7


def test_render_fails_with_the_store_and_logs_it(exporter: Exporter) -> None:
    exporter.render()
    with exporter.store.engine.begin() as connection:
        connection.execute(sa.text("DROP TABLE kpi_state"))
    with capture_logs() as logs, pytest.raises(StoreError, match="read states"):
        render(exporter.registry, generate_latest)
    assert any(e["log_level"] == "error" and "metrics scrape failed" in e["event"] for e in logs)


def test_render_includes_collectors_registered_later(exporter: Exporter) -> None:
    Gauge("extra_gauge", "registered by someone else", registry=exporter.registry).set(2)
    text = exporter.render().decode()  # the registry path, byte-equal (asserted)
    assert "extra_gauge 2.0" in text
    assert "kpiwatch_kpi_value" in text


def test_render_of_another_registry_is_its_encoders_output() -> None:
    registry = CollectorRegistry()
    Gauge("plain", "a plain gauge", registry=registry).set(1)
    assert render(registry, generate_latest) == generate_latest(registry)


def test_concurrent_renders_agree_while_states_change(exporter: Exporter) -> None:
    quotes = exporter.store.get_state("quotes")
    assert quotes is not None
    outputs: list[bytes] = []
    errors: list[BaseException] = []

    def scrape() -> None:
        try:
            for _ in range(15):
                outputs.append(render(exporter.registry, generate_latest))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=scrape) for _ in range(4)]
    for thread in threads:
        thread.start()
    for i in range(20):
        exporter.store.save_state(quotes._replace(value=float(i)))
    for thread in threads:
        thread.join()
    assert errors == []
    for output in outputs:  # each one whole: every family, the KPI's value once
        m = _parse(output.decode())
        assert len(m["kpiwatch_kpi_info"]) == 5
        assert m["kpiwatch_kpi_value"][kpi("quotes")] in {123456789.25, *map(float, range(20))}
    assert exporter.scrape()["kpiwatch_kpi_value"][kpi("quotes")] == 19.0


# -- the lean state read behind it ---------------------------------------------------------


@pytest.fixture(
    params=[
        "sqlite_url",
        pytest.param("postgres_url", marks=pytest.mark.postgres),
        pytest.param("mariadb_url", marks=pytest.mark.mariadb),
    ]
)
def any_store(request: pytest.FixtureRequest) -> Iterator[Store]:
    """A store holding AWKWARD_STATES (1e300 for infinity: MySQL refuses inf)."""
    store = Store.open(request.getfixturevalue(request.param))
    for state in AWKWARD_STATES:
        store.save_state(state._replace(value=1e300) if state.value == math.inf else state)
    yield store
    store.close()


def test_state_snapshots_convert_as_the_store_does(any_store: Store) -> None:
    shown = StateSnapshots(any_store).read()
    assert shown == {
        kpi_id: ShownState(s.status, s.value, s.review, s.escalated, s.last_evaluated, s.blind,
                           next_review=s.next_review)
        for kpi_id, s in any_store.states().items()
    }
    assert shown["quotes"].last_evaluated == EVALUATED  # microseconds and UTC kept
    assert shown["quotes"].last_evaluated.tzinfo is not None
    assert [k for k, s in shown.items() if s.blind] == ["unknown"]
    assert shown["unknown"].value == 42.0  # as stored: the exporter decides what to show


def test_state_snapshots_keep_unchanged_states_and_see_every_change(any_store: Store) -> None:
    snapshots = StateSnapshots(any_store)
    first = snapshots.read()
    again = snapshots.read()
    assert all(again[k] is first[k] for k in first)  # the same objects: cache keys
    unicode = AWKWARD_STATES[1]
    any_store.save_state(unicode._replace(value=2.0))  # same last_evaluated
    any_store.delete_state("unknown")
    any_store.save_state(KpiState("never", Status.GREEN, NOW, ReviewCadence.WEEKLY))
    later = snapshots.read()
    assert later.keys() == {"quotes", "unicode", "infinite", "never"}
    assert later["unicode"].value == 2.0
    assert later["quotes"] is first["quotes"]
    assert later["never"] == ShownState(
        Status.GREEN, None, ReviewCadence.WEEKLY, False, None, blind=False
    )
    later["quotes"] = later["never"]  # the caller's own dict: the next read is not affected
    assert snapshots.read()["quotes"] is first["quotes"]
    # only the data problem changes (no_data: red keeps judging on it): no longer blind
    infinite = AWKWARD_STATES[2]._replace(value=1e300)  # MySQL refuses inf
    problem = DataProblem(NOW, "no rows", "kpi", "wh")
    any_store.save_state(infinite._replace(status=Status.UNKNOWN, data_problem=problem))
    assert snapshots.read()["infinite"].blind
    any_store.save_state(infinite._replace(status=Status.RED, data_problem=problem))
    assert snapshots.read()["infinite"].blind is False


def test_state_snapshots_fail_with_a_store_error(any_store: Store) -> None:
    snapshots = StateSnapshots(any_store)
    with any_store.engine.begin() as connection:
        connection.execute(sa.text("DROP TABLE kpi_state"))
    with pytest.raises(StoreError, match="read states"):
        snapshots.read()


def test_reminders_counted_by_status_from_zero(daemon: Daemon) -> None:
    assert daemon.scrape()["kpiwatch_reminders"] == {(("status", "red"),): 0.0}
    daemon.runner.on_reminded = daemon.metrics.reminded
    daemon.clock.set(NOW + timedelta(days=1))  # churn turned red at NOW: its first reminder
    assert daemon.runner.tick_reminders() == 1
    assert daemon.scrape()["kpiwatch_reminders"] == {(("status", "red"),): 1.0}


# -- blind KPIs and data incidents (SPEC §5a) ---------------------------------------------


def test_a_blind_kpi_is_unknown_blind_and_exports_no_value(exporter: Exporter) -> None:
    for accept in ACCEPTS.values():  # every encoder: render() asserts the registry's bytes
        exporter.render(accept)
    m = exporter.scrape()
    assert m["kpiwatch_kpi_blind"] == {
        kpi("quotes"): 0.0,
        kpi("unicode", ""): 0.0,
        kpi("infinite"): 0.0,
        kpi("unknown", ""): 1.0,  # its source times out
        kpi("never"): 0.0,  # never evaluated: unknown, but nobody's data problem
    }
    assert kpi("unknown", "") not in m["kpiwatch_kpi_value"]  # the kept 42.0 is not news
    assert m["kpiwatch_kpi_status"][kpi("unknown", "", status="unknown")] == 1.0
    assert m["kpiwatch_kpi_status"][kpi("unknown", "", status="red")] == 0.0
    # the data returns: judged red again, the value exported, no longer blind
    blind = AWKWARD_STATES[3]
    exporter.store.save_state(
        blind._replace(status=Status.RED, value=43.0, error=None, data_problem=None)
    )
    m = exporter.scrape()
    assert m["kpiwatch_kpi_blind"][kpi("unknown", "")] == 0.0
    assert m["kpiwatch_kpi_value"][kpi("unknown", "")] == 43.0
    # no_data: keep_last judges the last value through a data problem: not blind
    exporter.store.save_state(blind._replace(status=Status.RED, value=44.0))
    m = exporter.scrape()
    assert m["kpiwatch_kpi_blind"][kpi("unknown", "")] == 0.0
    assert m["kpiwatch_kpi_value"][kpi("unknown", "")] == 44.0
    # blind again, as another replica would write it: at the next scrape
    exporter.store.save_state(blind)
    m = exporter.scrape()
    assert m["kpiwatch_kpi_blind"][kpi("unknown", "")] == 1.0
    assert kpi("unknown", "") not in m["kpiwatch_kpi_value"]


def test_source_incident_follows_the_stored_incident_for_every_declared_source(
    exporter: Exporter,
) -> None:
    m = exporter.scrape()
    assert m["kpiwatch_source_incident"] == {(("source", "wh"),): 1.0}
    assert m["kpiwatch_source_up"] == {(("source", "wh"),): 0.0}
    exporter.store.set_source_health("wh", up=True, now=NOW + timedelta(minutes=5), error=None)
    m = exporter.scrape()
    assert m["kpiwatch_source_incident"] == {(("source", "wh"),): 0.0}
    assert m["kpiwatch_source_up"] == {(("source", "wh"),): 1.0}
    # a declared source with nothing recorded: no incident; the built-in ones are not sources
    more = (
        AWKWARD_RULES.replace("sources:\n", 'sources:\n  crm: {type: sql, url: "sqlite://"}\n')
        + "  - {id: pushed, name: Pushed, owner: ops@example.com, "
        "direction: higher_is_better, source: push}\n"
    )
    exporter.rules[0] = load_rule_text(more, "rules.yaml").rules
    m = exporter.scrape()
    assert m["kpiwatch_source_incident"] == {
        (("source", "wh"),): 0.0,
        (("source", "crm"),): 0.0,
    }
    assert (("source", "crm"),) not in m["kpiwatch_source_up"]
    assert not any(dict(k)["source"] in ("push", "formula") for k in m["kpiwatch_source_up"])


def test_a_kpis_own_failing_query_blinds_it_without_a_source_incident(daemon: Daemon) -> None:
    daemon.source.set("signups", SourceError("no such column: signups", source="wh"))
    daemon.runner.evaluate_kpi("signups")
    signups = daemon.store.get_state("signups")
    assert signups is not None
    assert signups.data_problem is not None
    assert signups.data_problem.scope == "kpi"
    m = daemon.scrape()
    assert m["kpiwatch_kpi_blind"][kpi("signups")] == 1.0
    assert kpi("signups") not in m["kpiwatch_kpi_value"]
    assert m["kpiwatch_source_incident"][(("source", "wh"),)] == 0.0  # wh works
    assert m["kpiwatch_source_up"][(("source", "wh"),)] == 1.0


def test_blind_and_incident_end_when_the_data_returns(daemon: Daemon) -> None:
    before = daemon.scrape()
    assert before["kpiwatch_kpi_blind"][kpi("uptime", "")] == 1.0
    assert before["kpiwatch_source_incident"][(("source", "crm"),)] == 1.0
    daemon.source.set("uptime", 99.9)
    daemon.clock.set(NOW + timedelta(minutes=10))
    daemon.runner.evaluate_kpi("uptime")
    m = daemon.scrape()
    assert m["kpiwatch_kpi_blind"][kpi("uptime", "")] == 0.0
    assert m["kpiwatch_kpi_value"][kpi("uptime", "")] == 99.9
    assert m["kpiwatch_kpi_status"][kpi("uptime", "", status="green")] == 1.0
    assert m["kpiwatch_source_incident"][(("source", "crm"),)] == 0.0
    assert m["kpiwatch_source_up"][(("source", "crm"),)] == 1.0


# -- plans per period (SPEC §2a): the judged period's plan, thresholds in % of it -------------

PLAN_SQL = "SELECT month, plan FROM plans"
PLAN_RULES = f"""
sources:
  wh: {{type: sql, url: "sqlite://"}}
teams:
  sales: {{}}
kpis:
  - id: revenue
    name: Monthly revenue
    owner: sam@example.com
    team: sales
    unit: $
    direction: higher_is_better
    source: wh
    query: SELECT ordered_at, amount FROM orders
    period: month
    aggregate: sum
    target:
      plan: {{2026-01: 30000, 2026-02: 33000}}
    thresholds: {{yellow: 95%, red: 90%}}
  - id: tickets
    name: Tickets closed
    owner: tia@example.com
    team: sales
    direction: higher_is_better
    source: wh
    query: SELECT day, closed FROM tickets
    period: month
    aggregate: sum
    target: {{plan_query: "{PLAN_SQL}"}}
    thresholds: {{yellow: 80%, red: 50%}}
  - id: margin
    name: Margin
    owner: sam@example.com
    team: sales
    unit: "%"
    direction: higher_is_better
    source: wh
    query: SELECT month, margin FROM margins
    period: month
    thresholds: {{yellow: 30, red: 20}}
    target: {{plan: {{2026-01: 40, 2026-02: 50}}}}
  - id: churn
    name: Churn
    owner: ben@example.com
    team: sales
    direction: lower_is_better
    source: wh
    query: SELECT 1
    thresholds: {{yellow: 3, red: 5}}
    target: {{value: 2}}
  - id: signups
    name: Signups
    owner: ava@example.com
    team: sales
    direction: higher_is_better
    source: wh
    query: SELECT 1
    target: {{value: 150, by: 2026-12-31, baseline: 100, baseline_date: 2026-01-01}}
"""


class PlanSource(FakeSource):
    """A FakeSource that answers a KPI's ``plan_query`` with the plan rows a test sets."""

    def __init__(self, name: str = "wh") -> None:
        super().__init__(name)
        self.plans: list[tuple[datetime, float]] = []

    def fetch(self, kpi: Kpi, now: datetime) -> FetchResult:
        if kpi.query == PLAN_SQL:
            return FetchResult(tuple(Observation(kpi.id, at, v) for at, v in self.plans), 0.0)
        return super().fetch(kpi, now)


@dataclass
class Planned:
    store: Store
    runner: Runner
    registry: CollectorRegistry
    clock: FixedClock
    source: PlanSource
    rules: list[RuleSet]  # [the rules running now]; a test swaps them like a reload

    def scrape(self) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        """What /metrics answers (the fast path), byte-equal to the registry path."""
        for accept in ("", ACCEPTS["Prometheus 2: OpenMetrics 1.0.0"]):
            encoder = choose_encoder(accept)[0]
            assert render(self.registry, encoder) == encoder(self.registry)
        return _parse(render(self.registry, generate_latest).decode())


def _days(month_start: datetime, days: int, value: float) -> list[tuple[datetime, float]]:
    return [(month_start + timedelta(days=d, hours=12), value) for d in range(days)]


@pytest.fixture
def planned_daemon(tmp_path: Path) -> Iterator[Planned]:
    """On 2 March 2026 February is judged: revenue 28 x 1,100 $ = 30,800 $ against its
    plan of 33,000 $ (yellow: below 95 %, 31,350 $); tickets 28 x 10 = 280 against the
    queried plan of 300; margin 25 % against a plan of 50 % and absolute thresholds.
    churn (a fixed target) and signups (a glide path) have no period."""
    store = Store.open(f"sqlite:///{tmp_path}/state.db")
    clock = FixedClock(NOW)
    source = PlanSource()
    workspace = fake_workspace(PLAN_RULES, store.latest, {"wh": source})
    runner = Runner(store, clock, workspace, tz=ZoneInfo("UTC"), review_time=time(9, 0))
    jan, feb, mar = (datetime(2026, m, 1, tzinfo=UTC) for m in (1, 2, 3))
    source.set("revenue", _days(jan, 31, 1000.0) + _days(feb, 28, 1100.0) + _days(mar, 1, 5.0))
    source.set("tickets", _days(jan, 31, 10.0) + _days(feb, 28, 10.0))
    source.set("margin", [(jan, 35.0), (feb, 25.0)])
    source.plans = [(jan, 310.0), (feb, 300.0)]
    source.set("churn", 2.5)
    source.set("signups", 120.0)
    rules = [workspace.rules]
    registry = build_registry(store, lambda: rules[0], Metrics([]), clock=clock,
                              tz=ZoneInfo("UTC"))  # fmt: skip
    yield Planned(store, runner, registry, clock, source, rules)
    store.close()


def test_a_plan_is_the_target_and_percent_thresholds_come_to_levels_of_it(
    planned_daemon: Planned,
) -> None:
    daemon = planned_daemon
    m = daemon.scrape()
    glide = 100 + 50 * (NOW - datetime(2026, 1, 1, tzinfo=UTC)) / timedelta(days=364)
    # never evaluated: no plan is known, so neither a plan nor % thresholds are exported
    assert m["kpiwatch_kpi_target"] == {
        kpi("churn", "sales"): 2.0, kpi("signups", "sales"): pytest.approx(glide),
    }  # fmt: skip
    assert m["kpiwatch_kpi_threshold"] == {
        kpi("margin", "sales", severity="yellow"): 30.0,
        kpi("margin", "sales", severity="red"): 20.0,
        kpi("churn", "sales", severity="yellow"): 3.0,
        kpi("churn", "sales", severity="red"): 5.0,
    }
    for kpi_id in ("revenue", "tickets", "margin", "churn", "signups"):
        daemon.runner.evaluate_kpi(kpi_id)
    revenue = daemon.store.get_state("revenue")
    assert revenue is not None
    assert (revenue.value, revenue.plan, revenue.status) == (30800.0, 33000.0, Status.YELLOW)
    m = daemon.scrape()
    assert m["kpiwatch_kpi_target"] == {
        kpi("revenue", "sales"): 33000.0,  # February's plan, not a number from the rules
        kpi("tickets", "sales"): 300.0,  # from the plan query
        kpi("margin", "sales"): 50.0,
        kpi("churn", "sales"): 2.0,
        kpi("signups", "sales"): pytest.approx(glide),
    }
    assert m["kpiwatch_kpi_threshold"] == {
        kpi("revenue", "sales", severity="yellow"): 31350.0,  # 95 % of 33,000, never 95
        kpi("revenue", "sales", severity="red"): 29700.0,
        kpi("tickets", "sales", severity="yellow"): 240.0,
        kpi("tickets", "sales", severity="red"): 150.0,
        kpi("margin", "sales", severity="yellow"): 30.0,  # absolute: as written
        kpi("margin", "sales", severity="red"): 20.0,
        kpi("churn", "sales", severity="yellow"): 3.0,
        kpi("churn", "sales", severity="red"): 5.0,
    }
    assert m["kpiwatch_kpi_value"][kpi("revenue", "sales")] == 30800.0


def test_the_plan_follows_the_judged_period_and_is_absent_without_one(
    planned_daemon: Planned,
) -> None:
    daemon = planned_daemon
    daemon.runner.evaluate_kpi("revenue")
    assert daemon.scrape()["kpiwatch_kpi_target"][kpi("revenue", "sales")] == 33000.0
    # April: March is judged and has no plan; nothing to export against
    daemon.clock.set(datetime(2026, 4, 2, 8, 0, tzinfo=UTC))
    daemon.source.set("revenue", _days(datetime(2026, 3, 1, tzinfo=UTC), 31, 1000.0))
    daemon.runner.evaluate_kpi("revenue")
    state = daemon.store.get_state("revenue")
    assert state is not None
    assert (state.observed_at, state.plan) == (datetime(2026, 3, 1, tzinfo=UTC), None)
    m = daemon.scrape()
    assert kpi("revenue", "sales") not in m["kpiwatch_kpi_target"]
    assert not any(dict(k)["kpi"] == "revenue" for k in m["kpiwatch_kpi_threshold"])
    # a plan written behind the exporter's back (another replica) shows at the next scrape
    daemon.store.save_state(state._replace(plan=40000.0))
    m = daemon.scrape()
    assert m["kpiwatch_kpi_target"][kpi("revenue", "sales")] == 40000.0
    assert m["kpiwatch_kpi_threshold"][kpi("revenue", "sales", severity="yellow")] == 38000.0
    assert m["kpiwatch_kpi_threshold"][kpi("revenue", "sales", severity="red")] == 36000.0


def test_a_reload_that_makes_thresholds_percent_rewrites_them(planned_daemon: Planned) -> None:
    daemon = planned_daemon
    daemon.runner.evaluate_kpi("margin")
    before = daemon.scrape()["kpiwatch_kpi_threshold"]
    assert before[kpi("margin", "sales", severity="yellow")] == 30.0
    # the same numbers, now percents of the plan: 30 % and 20 % of February's 50 %
    text = PLAN_RULES.replace("{yellow: 30, red: 20}", "{yellow: 30%, red: 20%}")
    daemon.rules[0] = load_rule_text(text, "rules.yaml").rules
    after = daemon.scrape()["kpiwatch_kpi_threshold"]
    assert after[kpi("margin", "sales", severity="yellow")] == 15.0
    assert after[kpi("margin", "sales", severity="red")] == 10.0


def test_state_snapshots_read_the_plan(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path}/plan.db") as store:
        state = KpiState("revenue", Status.GREEN, NOW, ReviewCadence.MONTHLY, value=1.0,
                         plan=33000.0)  # fmt: skip
        store.save_state(state)
        snapshots = StateSnapshots(store)
        first = snapshots.read()["revenue"]
        assert first.plan == 33000.0
        store.save_state(state._replace(plan=None))  # only the plan changes
        assert snapshots.read()["revenue"].plan is None
        due = NOW + timedelta(days=3, microseconds=7)  # what the board's "overdue" reads
        store.save_state(state._replace(next_review=due))
        assert snapshots.read()["revenue"].next_review == due
