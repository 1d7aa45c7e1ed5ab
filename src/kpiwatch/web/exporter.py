"""The Prometheus exporter: what kpiwatch knows, as metrics (SPEC §6).

No global registry: :func:`build_registry` makes one per daemon, holding one
collector that builds every family afresh at each scrape from the rules running
now and three bulk store reads. So nothing goes stale: a KPI or source removed
by a reload is gone at the next scrape, a state another replica wrote shows at
the next scrape. A scrape never queries a KPI's source; the KPI values are the
cached results of kpiwatch's own evaluations.

Two ways out, the same data: the registry (``collect()``, prometheus_client's
encoders, the Pushgateway push) and :func:`render`, which ``/metrics`` calls.
At 10,000 KPIs prometheus_client spends ~10 µs a sample line (110,000 of them),
so :func:`render` writes the per-KPI sample lines itself
(:mod:`kpiwatch.web.kpi_lines`), byte for byte as prometheus_client would, and keeps
them between scrapes: what only the rules
decide, per KPI definition (a reload rebuilds only the KPIs it changed), and
per KPI the lines of the state it last rendered, keyed by the
:class:`~kpiwatch.store.snapshot.ShownState` object that the lean state read
returns unchanged until the row changes (a KPI with a plan per period takes its
target and its thresholds in % of the plan from its state: the judged period's
plan). Headers and the small families still go through the negotiated encoder; an
encoder that writes sample lines otherwise (checked at every scrape) gets the
registry path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from kpiwatch import __version__
from kpiwatch.clock import Clock, SystemClock
from kpiwatch.config.rules import BUILTIN_SOURCES, RuleSet
from kpiwatch.errors import StoreError
from kpiwatch.evaluation.target import glide_expected
from kpiwatch.model import Status
from kpiwatch.store.repository import Store
from kpiwatch.store.retention_store import PRUNED_TABLES
from kpiwatch.store.snapshot import ShownState, StateSnapshots
from kpiwatch.web.exposition import sample_line
from kpiwatch.web.kpi_lines import (
    BLIND,
    ESCALATED,
    EVALUATED,
    INFO,
    INTERVAL,
    PER_KPI,
    STATUS,
    TARGET,
    THRESHOLD,
    VALUE,
    RuleSetView,
    exported_value,
    plan_levels,
)
from kpiwatch.web.metrics import Metrics

__all__ = ["KpiCollector", "Metrics", "build_registry", "render"]

log = structlog.get_logger("kpiwatch.exporter")

_CACHED = "(cached; a scrape never queries sources)"
# name -> (type, HELP); the per-KPI families (PER_KPI) are labelled kpi and team
FAMILIES: dict[str, tuple[str, str]] = {
    VALUE: ("gauge", f"Latest KPI value kpiwatch evaluated {_CACHED}"),
    TARGET: ("gauge", "KPI target in force now, from the rules: the glide-path value "
                      "when baseline, baseline_date and by are given, else the target; for "
                      "a plan per period the judged period's plan, absent while none is known"),
    THRESHOLD: ("gauge", "KPI threshold per severity, from the rules; thresholds in % of "
                         "the plan as they come to against the judged period's plan"),
    STATUS: ("gauge", "KPI status kpiwatch last evaluated: 1 for the current, "
                      f"0 for the others {_CACHED}"),
    ESCALATED: ("gauge", f"1 while the KPI is escalated, else 0 {_CACHED}"),
    BLIND: ("gauge", "1 while the KPI is blind: unknown because its value cannot be had "
                     "(source down, query error, no rows, stale), its last verdict kept; "
                     f"else 0 {_CACHED}"),
    INTERVAL: ("gauge", "Nominal seconds between reviews at the KPI's cadence in force"),
    EVALUATED: ("gauge", f"When kpiwatch last evaluated the KPI, in Unix seconds {_CACHED}"),
    INFO: ("gauge", "KPI metadata from the rules; always 1"),
    "kpiwatch_source_up": ("gauge", "0 while the source has an open data incident, else 1; "
                                    f"left out before its first recorded query {_CACHED}"),
    "kpiwatch_source_incident": (
        "gauge", "1 while the source has an open data incident (it fails as a whole: "
                 f"unreachable, every KPI failing, stale), else 0 {_CACHED}"),
    "kpiwatch_source_query_duration_seconds": (
        "gauge", "Duration of kpiwatch's last query of the source, in seconds"),
    "kpiwatch_evaluations_total": (
        "counter", "KPI evaluations by resulting status, or error for evaluations that failed"),
    "kpiwatch_notifications_total": (
        "counter", "Notification deliveries by channel and result (sent, dead, suppressed, "
                   "retried)"),
    "kpiwatch_reminders_total": (
        "counter", "Reminders of unacknowledged episodes, by the episode's status (those "
                   "that fell in a silence or mute window too: the outbox suppressed them)"),
    "kpiwatch_outbox_pending": ("gauge", "Notifications waiting in the outbox, per channel"),
    "kpiwatch_schedule_lag_seconds": (
        "gauge", "The latest start of a scheduled KPI evaluation after its due time, over the "
                 "last whole minute: a daemon that cannot keep up shows it here"),
    "kpiwatch_evaluations_skipped_total": (
        "counter", "Scheduled KPI evaluations skipped: busy (its last run was still going) "
                   "or missed (later than KPIWATCH_MISFIRE_GRACE)"),
    "kpiwatch_pruned_rows_total": (
        "counter", "Rows the retention (KPIWATCH_RETENTION) deleted since the daemon "
                   "started, per table: observations, status_changes, events, outbox"),
    "kpiwatch_build_info": ("gauge", "kpiwatch version; always 1"),
}  # fmt: skip


def _family(name: str, labels: Iterable[str] = ()) -> GaugeMetricFamily | CounterMetricFamily:
    kind, help_text = FAMILIES[name]
    family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
    return family(name, help_text, labels=list(labels))


def _counter(name: str, labels: list[str], counts: Iterable[tuple[tuple[str, ...], int]]) -> Metric:
    family = CounterMetricFamily(name, FAMILIES[name][1], labels=labels)
    for key, count in sorted(counts):
        family.add_metric(list(key), count)
    return family


def _sample(family: Metric, labels: dict[str, str], value: float) -> None:
    family.samples.append(Sample(family.name, labels, value))


@dataclass(frozen=True, slots=True)
class _Scrape:
    """Everything one scrape shows, read before anything is written."""

    view: RuleSetView
    now: float
    states: Mapping[str, ShownState]
    health: dict[str, tuple[bool, datetime, str | None]]
    pending: dict[str, int]
    evaluations: dict[str, int]
    notifications: dict[tuple[str, str], int]
    query_seconds: dict[str, float]
    reminders: dict[str, int]


class _Families(Collector):
    """Prebuilt families, handed to a prometheus_client encoder (it only calls collect())."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


Encoder = Callable[[Collector], bytes]  # generate_latest and the others choose_encoder picks
_EOF = b"# EOF\n"  # OpenMetrics' last line
_PROBE = Sample(VALUE, {"kpi": 'q"b\\s\nn', "team": "Größe 日本"}, 123456789.25)


def _writes_our_lines(encoder: Encoder) -> bool:
    """Whether ``encoder`` writes a sample line as render() does: the text format and
    OpenMetrics do, not so the "dots" or "values" name escaping a client may ask for."""
    probe = _family(VALUE, ["kpi", "team"])
    probe.samples.append(_PROBE)
    return b"\n" + sample_line(_PROBE) in encoder(_Families([probe]))


def _header(encoder: Encoder, name: str) -> bytes:
    """A family's HELP and TYPE lines, as ``encoder`` writes them."""
    return encoder(_Families([_family(name)])).removesuffix(_EOF)


class KpiCollector(Collector):
    """Builds every kpiwatch family at scrape time (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        rules: Callable[[], RuleSet],
        metrics: Metrics,
        *,
        clock: Clock | None = None,
        tz: ZoneInfo | None = None,
    ) -> None:
        self._store = store
        self._states = StateSnapshots(store)
        self._rules = rules
        self._metrics = metrics
        self._clock = clock or SystemClock()
        self._tz = tz or ZoneInfo("UTC")  # calendar dates of targets: the settings' timezone
        self._view: RuleSetView | None = None

    def describe(self) -> Iterator[Metric]:
        """The family names, so the registry refuses another collector that clashes."""
        for name in FAMILIES:
            yield _family(name)

    def collect(self) -> Iterator[Metric]:
        scrape = self._scrape()
        yield from self._kpi_families(scrape)
        yield from self._other_families(scrape)

    def render(self, encoder: Encoder) -> bytes:
        """``encoder(registry)`` for a registry holding only this collector, fast (see the
        module docstring); raises StoreError, as collect() does, when the store fails."""
        if not _writes_our_lines(encoder):
            return encoder(_Families(self.collect()))
        scrape = self._scrape()
        chunks: list[bytes] = []
        for name, lines in scrape.view.text.bodies(scrape.states, scrape.now):
            chunks += (_header(encoder, name), lines)
        chunks.append(encoder(_Families(self._other_families(scrape))))  # ends OpenMetrics' EOF
        return b"".join(chunks)

    def _scrape(self) -> _Scrape:
        view = self._view_of(self._rules())
        # All reads first: a failed read fails the scrape before any output.
        # Failing (HTTP 500, `up` 0 -> KpiwatchDown) is deliberate: the SPEC's families have
        # no "store up" gauge, so a partial answer would drop the state series unnoticed
        # (and silence KpiwatchEvaluationsStale) while the daemon cannot save evaluations.
        try:
            states = self._states.read()
            health = self._store.source_health()
            pending = self._store.pending_counts()
        except StoreError as exc:
            log.error("metrics scrape failed: the store cannot be read", error=str(exc))
            raise
        evaluations, notifications, query_seconds = self._metrics.snapshot()
        now = self._clock.now().timestamp()
        return _Scrape(view, now, states, health, pending, evaluations, notifications,
                       query_seconds, self._metrics.reminders())  # fmt: skip

    def _other_families(self, scrape: _Scrape) -> Iterator[Metric]:
        up = _family("kpiwatch_source_up", ["source"])
        incident = _family("kpiwatch_source_incident", ["source"])
        duration = _family("kpiwatch_source_query_duration_seconds", ["source"])
        health, query_seconds = scrape.health, scrape.query_seconds
        for source in scrape.view.rules.sources:  # sources no longer in the rules are left out
            if source in BUILTIN_SOURCES:  # formula, push: no source of anyone's to fail
                continue
            # source_health holds each source's incident state: up is False exactly while
            # an incident is open (kpiwatch.evaluation.incidents)
            down = source in health and not health[source][0]
            if source in health:
                _sample(up, {"source": source}, 0.0 if down else 1.0)
            _sample(incident, {"source": source}, 1.0 if down else 0.0)
            if source in query_seconds:
                _sample(duration, {"source": source}, query_seconds[source])
        yield up
        yield incident
        yield duration

        evaluations = [((r,), n) for r, n in scrape.evaluations.items()]
        yield _counter("kpiwatch_evaluations_total", ["result"], evaluations)
        yield _counter(
            "kpiwatch_notifications_total", ["channel", "result"], scrape.notifications.items()
        )
        reminders = [((status,), n) for status, n in scrape.reminders.items()]
        yield _counter("kpiwatch_reminders_total", ["status"], reminders)
        waiting = _family("kpiwatch_outbox_pending", ["channel"])
        pending = scrape.pending
        for channel in sorted({*self._metrics.channels, *pending}):
            _sample(waiting, {"channel": channel}, pending.get(channel, 0))
        yield waiting
        lag = _family("kpiwatch_schedule_lag_seconds", [])
        _sample(lag, {}, self._metrics.schedule.lag_seconds())
        yield lag
        skipped = [((reason,), n) for reason, n in self._metrics.schedule.skipped_counts().items()]
        yield _counter("kpiwatch_evaluations_skipped_total", ["reason"], skipped)
        pruned = self._metrics.pruned_rows()  # every table from 0: increase() needs a start
        yield _counter("kpiwatch_pruned_rows_total", ["table"],
                       [((t,), pruned.get(t, 0)) for t in PRUNED_TABLES])  # fmt: skip
        build = _family("kpiwatch_build_info", ["version"])
        _sample(build, {"version": __version__}, 1.0)
        yield build

    def _kpi_families(self, scrape: _Scrape) -> Iterator[Metric]:
        states, now = scrape.states, scrape.now
        families = [_family(name) for name in PER_KPI]
        value, target, threshold, status, escalated, blind, interval, evaluated, info = (
            family.samples.append for family in families
        )
        for kpi in scrape.view.series:  # plain appends, helper calls only for plans
            state = states.get(kpi.id)
            if kpi.target is not None:
                target(kpi.target)
            elif kpi.glide is not None:
                target(Sample(TARGET, kpi.labels, glide_expected(now, *kpi.glide)))
            elif kpi.planned and state is not None and state.plan is not None:
                target(Sample(TARGET, kpi.labels, state.plan))
            for sample in kpi.thresholds:
                threshold(sample)
            if kpi.percent is not None and state is not None:
                for severity, level in plan_levels(kpi.percent, state.plan):
                    threshold(Sample(THRESHOLD, {**kpi.labels, "severity": severity}, level))
            info(kpi.info)
            if state is None:  # never evaluated: unknown, not escalated, configured cadence
                for sample in kpi.status[Status.UNKNOWN]:
                    status(sample)
                escalated(kpi.escalated[False])
                blind(kpi.blind[False])
                interval(Sample(INTERVAL, kpi.labels, kpi.review))
                continue
            if (shown := exported_value(state)) is not None:
                value(Sample(VALUE, kpi.labels, shown))
            for sample in kpi.status[state.status]:
                status(sample)
            escalated(kpi.escalated[state.escalated])
            blind(kpi.blind[state.blind])
            interval(Sample(INTERVAL, kpi.labels, state.review.nominal_seconds))
            if state.last_evaluated is not None:
                evaluated(Sample(EVALUATED, kpi.labels, state.last_evaluated.timestamp()))
        yield from families

    def _view_of(self, rules: RuleSet) -> RuleSetView:
        """What never changes between two reloads, built once per rule set."""
        view = self._view
        if view is None or view.rules is not rules:
            view = RuleSetView(rules, self._tz, view)
            self._view = view  # one assignment: concurrent scrapes see old or new
        return view


class KpiRegistry(CollectorRegistry):
    """:func:`build_registry`'s registry: it knows its collector, for :func:`render`."""

    def __init__(self, collector: KpiCollector) -> None:
        super().__init__()
        self._collectors: tuple[Collector, ...] = ()
        self.collector = collector
        self.register(collector)

    def register(self, collector: Collector) -> None:
        super().register(collector)
        self._collectors = (*self._collectors, collector)

    def unregister(self, collector: Collector) -> None:
        super().unregister(collector)
        self._collectors = tuple(c for c in self._collectors if c is not collector)

    def render(self, encoder: Encoder) -> bytes:
        """``encoder(self)``; by the collector's fast path while it is the only one."""
        if self._collectors == (self.collector,) and self.get_target_info() is None:
            return self.collector.render(encoder)
        return encoder(self)


def render(registry: CollectorRegistry, encoder: Encoder) -> bytes:
    """What ``encoder(registry)`` returns (``encoder`` as ``choose_encoder`` negotiated it),
    written by kpiwatch's fast path when ``registry`` is :func:`build_registry`'s."""
    if isinstance(registry, KpiRegistry):
        return registry.render(encoder)
    return encoder(registry)


def build_registry(
    store: Store,
    rules: Callable[[], RuleSet],
    metrics: Metrics,
    *,
    clock: Clock | None = None,
    tz: ZoneInfo | None = None,
) -> KpiRegistry:
    """A fresh registry (never prometheus_client's global one) with kpiwatch's collector."""
    return KpiRegistry(KpiCollector(store, rules, metrics, clock=clock, tz=tz))
