"""The Prometheus exporter: what kpiwatch knows, as metrics (SPEC §6).

No global registry: :func:`build_registry` makes one per daemon, holding one
collector that builds every family afresh at each scrape from the rules running
now and three bulk store reads. So nothing goes stale: a KPI or source removed
by a reload is gone at the next scrape. A scrape never queries a KPI's source;
the KPI values are the cached results of kpiwatch's own evaluations.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from kpiwatch import __version__
from kpiwatch.clock import Clock, SystemClock
from kpiwatch.config.rules import Kpi, RuleSet
from kpiwatch.errors import StoreError
from kpiwatch.evaluation.target import day_start, glide_expected
from kpiwatch.model import Evaluation, KpiState, Status
from kpiwatch.store.repository import Store

log = structlog.get_logger("kpiwatch.exporter")

EVALUATION_RESULTS = (*(s.value for s in Status), "error")  # error: the evaluation raised
BASELINE_RESULTS = ("sent", "dead")  # alert rules use increase(): they need a 0 to start from
STATUSES = tuple(Status)
_CACHED = "(cached; a scrape never queries sources)"
_VALUE = "kpiwatch_kpi_value"
_TARGET = "kpiwatch_kpi_target"
_THRESHOLD = "kpiwatch_kpi_threshold"
_STATUS = "kpiwatch_kpi_status"
_ESCALATED = "kpiwatch_kpi_escalated"
_INTERVAL = "kpiwatch_kpi_review_interval_seconds"
_EVALUATED = "kpiwatch_kpi_last_evaluation_timestamp_seconds"
_INFO = "kpiwatch_kpi_info"
_PER_KPI = (_VALUE, _TARGET, _THRESHOLD, _STATUS, _ESCALATED, _INTERVAL, _EVALUATED, _INFO)

# name -> (type, HELP); the per-KPI families (_PER_KPI) are labelled kpi and team
FAMILIES: dict[str, tuple[str, str]] = {
    _VALUE: ("gauge", f"Latest KPI value kpiwatch evaluated {_CACHED}"),
    _TARGET: ("gauge", "KPI target in force now, from the rules: the glide-path value "
                       "when baseline, baseline_date and by are given, else the target"),
    _THRESHOLD: ("gauge", "KPI threshold per severity, from the rules"),
    _STATUS: ("gauge", "KPI status kpiwatch last evaluated: 1 for the current, "
                       f"0 for the others {_CACHED}"),
    _ESCALATED: ("gauge", f"1 while the KPI is escalated, else 0 {_CACHED}"),
    _INTERVAL: ("gauge", "Nominal seconds between reviews at the KPI's cadence in force"),
    _EVALUATED: ("gauge", f"When kpiwatch last evaluated the KPI, in Unix seconds {_CACHED}"),
    _INFO: ("gauge", "KPI metadata from the rules; always 1"),
    "kpiwatch_source_up": ("gauge", "1 if kpiwatch's last query of the source succeeded, "
                                    f"else 0 {_CACHED}"),
    "kpiwatch_source_query_duration_seconds": (
        "gauge", "Duration of kpiwatch's last query of the source, in seconds"),
    "kpiwatch_evaluations_total": (
        "counter", "KPI evaluations by resulting status, or error for evaluations that failed"),
    "kpiwatch_notifications_total": (
        "counter", "Notification deliveries by channel and result (sent, dead, suppressed, "
                   "retried)"),
    "kpiwatch_outbox_pending": ("gauge", "Notifications waiting in the outbox, per channel"),
    "kpiwatch_build_info": ("gauge", "kpiwatch version; always 1"),
}  # fmt: skip


class Metrics:
    """What the daemon counts as it works; the runner's and outbox's hooks call these.

    Thread-safe: the hooks run on the scheduler's and outbox's worker threads.
    """

    def __init__(self, channels: Iterable[str]) -> None:
        self.channels = tuple(dict.fromkeys(channels))
        self._lock = threading.Lock()
        self._evaluations = dict.fromkeys(EVALUATION_RESULTS, 0)
        self._notifications = {(c, r): 0 for c in self.channels for r in BASELINE_RESULTS}
        self._query_seconds: dict[str, float] = {}

    def evaluated(self, evaluation: Evaluation) -> None:
        """Count one evaluation under its effective status (runner.on_evaluated)."""
        with self._lock:
            self._evaluations[evaluation.status.value] += 1

    def evaluation_failed(self, kpi_id: str) -> None:
        """Count one evaluation that raised (the KPI id is in the log, not a label)."""
        del kpi_id
        with self._lock:
            self._evaluations["error"] += 1

    def fetched(self, source: str, seconds: float) -> None:
        """Remember how long the last query of ``source`` took (runner.on_fetched)."""
        with self._lock:
            self._query_seconds[source] = seconds

    def delivered(self, channel: str, result: str) -> None:
        """Count one delivery outcome: sent | dead | suppressed | retried (outbox.on_result)."""
        with self._lock:
            key = (channel, result)
            self._notifications[key] = self._notifications.get(key, 0) + 1

    def snapshot(self) -> tuple[dict[str, int], dict[tuple[str, str], int], dict[str, float]]:
        """Copies of (evaluations, notifications, query seconds), taken under the lock."""
        with self._lock:
            return dict(self._evaluations), dict(self._notifications), dict(self._query_seconds)


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


def glide_path(kpi: Kpi, tz: ZoneInfo) -> tuple[float, float, float, float] | None:
    """(baseline, its Unix time, target, its Unix time) when the rules define the whole path.

    When ``baseline`` or ``baseline_date`` is left out the path starts at the first
    observation, which would cost a query per KPI at every scrape: such a KPI
    exports its final target instead (as the status board shows it).
    """
    target = kpi.target
    if target is None or target.by is None:
        return None
    if target.baseline is None or target.baseline_date is None:
        return None
    start = day_start(target.baseline_date, tz)
    return (target.baseline, start, target.value, day_start(target.by, tz))


@dataclass(frozen=True, slots=True)
class _KpiSeries:
    """A KPI's labels and the samples that only a reload changes, built once per rule set
    (so the hot loop of a scrape only appends; the status and escalated samples for
    every possible state are here too, a scrape picks the current ones)."""

    id: str
    labels: dict[str, str]  # shared by the KPI's samples; never mutated
    review: int  # seconds of the configured cadence, shown until the first evaluation
    target: Sample | None  # a target not on a glide path
    glide: tuple[float, float, float, float] | None
    thresholds: tuple[Sample, ...]
    status: dict[Status, tuple[Sample, ...]]
    escalated: tuple[Sample, Sample]  # indexed by the bool
    info: Sample

    @classmethod
    def of(cls, kpi: Kpi, tz: ZoneInfo) -> _KpiSeries:
        team = kpi.team or ""
        labels = {"kpi": kpi.id, "team": team}
        glide = glide_path(kpi, tz)
        fixed = kpi.target is not None and glide is None
        levels = kpi.thresholds
        by_status = [{**labels, "status": s.value} for s in STATUSES]
        one_hot = {
            s: (Sample(_STATUS, lb, 0.0), Sample(_STATUS, lb, 1.0))
            for s, lb in zip(STATUSES, by_status, strict=True)
        }
        info = {"kpi": kpi.id, "name": kpi.name, "team": team, "owner": kpi.owner,
                "unit": kpi.unit, "direction": kpi.direction.value}  # fmt: skip
        return cls(
            id=kpi.id,
            labels=labels,
            review=kpi.review.nominal_seconds,
            target=Sample(_TARGET, labels, kpi.target.value) if fixed and kpi.target else None,
            glide=glide,
            thresholds=tuple(
                Sample(_THRESHOLD, {**labels, "severity": severity}, level)
                for severity, level in (
                    ("yellow", levels.yellow if levels else None),
                    ("red", levels.red if levels else None),
                )
                if level is not None
            ),
            status={
                current: tuple(one_hot[s][s is current] for s in STATUSES) for current in STATUSES
            },
            escalated=(Sample(_ESCALATED, labels, 0.0), Sample(_ESCALATED, labels, 1.0)),
            info=Sample(_INFO, info, 1.0),
        )


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
        self._rules = rules
        self._metrics = metrics
        self._clock = clock or SystemClock()
        self._tz = tz or ZoneInfo("UTC")  # calendar dates of targets: the settings' timezone
        self._cached: tuple[RuleSet, tuple[_KpiSeries, ...]] | None = None

    def describe(self) -> Iterator[Metric]:
        """The family names, so the registry refuses another collector that clashes."""
        for name in FAMILIES:
            yield _family(name)

    def collect(self) -> Iterator[Metric]:
        rules = self._rules()
        # All reads first, then yield: a failed read fails the scrape before any output.
        # Failing (HTTP 500, `up` 0 -> KpiwatchDown) is deliberate: the SPEC's families have
        # no "store up" gauge, so a partial answer would drop the state series unnoticed
        # (and silence KpiwatchEvaluationsStale) while the daemon cannot save evaluations.
        try:
            states = self._store.states()
            health = self._store.source_health()
            pending = self._store.pending_counts()
        except StoreError as exc:
            log.error("metrics scrape failed: the store cannot be read", error=str(exc))
            raise
        evaluations, notifications, query_seconds = self._metrics.snapshot()
        yield from self._kpi_families(rules, states)

        up = _family("kpiwatch_source_up", ["source"])
        duration = _family("kpiwatch_source_query_duration_seconds", ["source"])
        for source in rules.sources:  # sources no longer in the rules are not exported
            if source in health:
                _sample(up, {"source": source}, 1.0 if health[source][0] else 0.0)
            if source in query_seconds:
                _sample(duration, {"source": source}, query_seconds[source])
        yield up
        yield duration

        yield _counter(
            "kpiwatch_evaluations_total", ["result"], [((r,), n) for r, n in evaluations.items()]
        )
        yield _counter("kpiwatch_notifications_total", ["channel", "result"], notifications.items())
        waiting = _family("kpiwatch_outbox_pending", ["channel"])
        for channel in sorted({*self._metrics.channels, *pending}):
            _sample(waiting, {"channel": channel}, pending.get(channel, 0))
        yield waiting
        build = _family("kpiwatch_build_info", ["version"])
        _sample(build, {"version": __version__}, 1.0)
        yield build

    def _kpi_families(self, rules: RuleSet, states: dict[str, KpiState]) -> Iterator[Metric]:
        series = self._series(rules)
        now = self._clock.now().timestamp()
        families = [_family(name) for name in _PER_KPI]
        value, target, threshold, status, escalated, interval, evaluated, info = (
            family.samples.append for family in families
        )
        for kpi in series:  # the hot loop of a scrape: plain appends, no helper calls
            state = states.get(kpi.id)
            if kpi.target is not None:
                target(kpi.target)
            elif kpi.glide is not None:
                target(Sample(_TARGET, kpi.labels, glide_expected(now, *kpi.glide)))
            for sample in kpi.thresholds:
                threshold(sample)
            info(kpi.info)
            if state is None:  # never evaluated: unknown, not escalated, configured cadence
                for sample in kpi.status[Status.UNKNOWN]:
                    status(sample)
                escalated(kpi.escalated[False])
                interval(Sample(_INTERVAL, kpi.labels, kpi.review))
                continue
            if state.value is not None:
                value(Sample(_VALUE, kpi.labels, state.value))
            for sample in kpi.status[state.status]:
                status(sample)
            escalated(kpi.escalated[state.escalated])
            interval(Sample(_INTERVAL, kpi.labels, state.review.nominal_seconds))
            if state.last_evaluated is not None:
                evaluated(Sample(_EVALUATED, kpi.labels, state.last_evaluated.timestamp()))
        yield from families

    def _series(self, rules: RuleSet) -> tuple[_KpiSeries, ...]:
        """What never changes between two reloads, built once per rule set."""
        cached = self._cached
        if cached is not None and cached[0] is rules:
            return cached[1]
        series = tuple(_KpiSeries.of(kpi, self._tz) for kpi in rules.kpis)
        self._cached = (rules, series)  # one assignment: concurrent scrapes see old or new
        return series


def build_registry(
    store: Store,
    rules: Callable[[], RuleSet],
    metrics: Metrics,
    *,
    clock: Clock | None = None,
    tz: ZoneInfo | None = None,
) -> CollectorRegistry:
    """A fresh registry (never prometheus_client's global one) with kpiwatch's collector."""
    registry = CollectorRegistry()
    registry.register(KpiCollector(store, rules, metrics, clock=clock, tz=tz))
    return registry
