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
so :func:`render` writes the per-KPI sample lines itself, byte for byte as
prometheus_client would, and keeps them between scrapes: what only the rules
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

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from itertools import compress
from operator import attrgetter, is_, is_not, itemgetter
from zoneinfo import ZoneInfo

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from kpiwatch import __version__
from kpiwatch.clock import Clock, SystemClock
from kpiwatch.config.rules import BUILTIN_SOURCES, Kpi, RuleSet, Thresholds
from kpiwatch.errors import StoreError
from kpiwatch.evaluation.judging import resolved_thresholds
from kpiwatch.evaluation.target import day_start, glide_expected
from kpiwatch.model import Status
from kpiwatch.notify.text import planned
from kpiwatch.store.repository import Store
from kpiwatch.store.snapshot import ShownState, StateSnapshots
from kpiwatch.web.exposition import line_end, line_prefix, sample_line
from kpiwatch.web.metrics import Metrics

__all__ = ["KpiCollector", "Metrics", "build_registry", "render"]

log = structlog.get_logger("kpiwatch.exporter")

STATUSES = tuple(Status)
_ONE, _ZERO = line_end(1.0), line_end(0.0)
_CACHED = "(cached; a scrape never queries sources)"
_VALUE = "kpiwatch_kpi_value"
_TARGET = "kpiwatch_kpi_target"
_THRESHOLD = "kpiwatch_kpi_threshold"
_STATUS = "kpiwatch_kpi_status"
_ESCALATED = "kpiwatch_kpi_escalated"
_BLIND = "kpiwatch_kpi_blind"
_INTERVAL = "kpiwatch_kpi_review_interval_seconds"
_EVALUATED = "kpiwatch_kpi_last_evaluation_timestamp_seconds"
_INFO = "kpiwatch_kpi_info"
_PER_KPI = (
    _VALUE, _TARGET, _THRESHOLD, _STATUS, _ESCALATED, _BLIND, _INTERVAL, _EVALUATED, _INFO,
)  # fmt: skip

# name -> (type, HELP); the per-KPI families (_PER_KPI) are labelled kpi and team
FAMILIES: dict[str, tuple[str, str]] = {
    _VALUE: ("gauge", f"Latest KPI value kpiwatch evaluated {_CACHED}"),
    _TARGET: ("gauge", "KPI target in force now, from the rules: the glide-path value "
                       "when baseline, baseline_date and by are given, else the target; for "
                       "a plan per period the judged period's plan, absent while none is known"),
    _THRESHOLD: ("gauge", "KPI threshold per severity, from the rules; thresholds in % of "
                          "the plan as they come to against the judged period's plan"),
    _STATUS: ("gauge", "KPI status kpiwatch last evaluated: 1 for the current, "
                       f"0 for the others {_CACHED}"),
    _ESCALATED: ("gauge", f"1 while the KPI is escalated, else 0 {_CACHED}"),
    _BLIND: ("gauge", "1 while the KPI is blind: unknown because its value cannot be had "
                      "(source down, query error, no rows, stale), its last verdict kept; "
                      f"else 0 {_CACHED}"),
    _INTERVAL: ("gauge", "Nominal seconds between reviews at the KPI's cadence in force"),
    _EVALUATED: ("gauge", f"When kpiwatch last evaluated the KPI, in Unix seconds {_CACHED}"),
    _INFO: ("gauge", "KPI metadata from the rules; always 1"),
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


def glide_path(kpi: Kpi, tz: ZoneInfo) -> tuple[float, float, float, float] | None:
    """(baseline, its Unix time, target, its Unix time) when the rules define the whole path.

    When ``baseline`` or ``baseline_date`` is left out the path starts at the first
    observation, which would cost a query per KPI at every scrape: such a KPI
    exports its final target instead (as the status board shows it).
    """
    target = kpi.target
    if target is None or target.by is None or target.value is None:
        return None
    if target.baseline is None or target.baseline_date is None:
        return None
    start = day_start(target.baseline_date, tz)
    return (target.baseline, start, target.value, day_start(target.by, tz))


@dataclass(frozen=True, slots=True)
class _KpiSeries:
    """A KPI's labels and the samples that only its rules decide, built once per KPI
    definition (so the hot loop of a scrape only appends; the status, escalated and blind
    samples for every possible state are here too, a scrape picks the current ones).

    A plan per period makes the target the judged period's plan (``ShownState.plan``),
    and thresholds in % of the plan what they come to against it: from the state."""

    id: str
    labels: dict[str, str]  # shared by the KPI's samples; never mutated
    review: int  # seconds of the configured cadence, shown until the first evaluation
    target: Sample | None  # a target not on a glide path, nor a plan
    glide: tuple[float, float, float, float] | None
    planned: bool  # the target is a plan per period: the state's plan
    thresholds: tuple[Sample, ...]  # thresholds in the KPI's unit
    percent: Thresholds | None  # thresholds in % of the plan: resolved per state
    status: dict[Status, tuple[Sample, ...]]
    escalated: tuple[Sample, Sample]  # indexed by the bool
    blind: tuple[Sample, Sample]  # indexed by the bool
    info: Sample

    @classmethod
    def of(cls, kpi: Kpi, tz: ZoneInfo) -> _KpiSeries:  # reads only what _shown() returns
        team = kpi.team or ""
        labels = {"kpi": kpi.id, "team": team}
        plan = planned(kpi)
        glide = None if plan else glide_path(kpi, tz)
        fixed = kpi.target is not None and glide is None and not plan
        levels = kpi.thresholds
        percent = levels if levels is not None and levels.percent else None
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
            target=Sample(_TARGET, labels, kpi.target.value)
            if fixed and kpi.target and kpi.target.value is not None
            else None,
            glide=glide,
            planned=plan,
            thresholds=()
            if percent is not None
            else tuple(
                Sample(_THRESHOLD, {**labels, "severity": severity}, level)
                for severity, level in (
                    ("yellow", levels.yellow if levels else None),
                    ("red", levels.red if levels else None),
                )
                if level is not None
            ),
            percent=percent,
            status={
                current: tuple(one_hot[s][s is current] for s in STATUSES) for current in STATUSES
            },
            escalated=(Sample(_ESCALATED, labels, 0.0), Sample(_ESCALATED, labels, 1.0)),
            blind=(Sample(_BLIND, labels, 0.0), Sample(_BLIND, labels, 1.0)),
            info=Sample(_INFO, info, 1.0),
        )


def _plan_levels(levels: Thresholds, plan: float | None) -> tuple[tuple[str, float], ...]:
    """(severity, level) of thresholds in % of the plan against ``plan``: none without one."""
    yellow, red = resolved_thresholds(levels, plan)
    return tuple((s, level) for s, level in (("yellow", yellow), ("red", red)) if level is not None)


def _exported_value(state: ShownState) -> float | None:
    """The value exported: none while the KPI is unknown, as in 0.1, although a blind
    state keeps its last value for the board (the value is its verdict's, not news)."""
    return None if state.status is Status.UNKNOWN else state.value


# -- render(): the per-KPI sample lines, written as prometheus_client writes them


# a KPI's lines of the families its state decides: value, status, escalated, blind, interval,
# evaluated, target, thresholds (the last two are the rules' own unless there is a plan; a
# glide path's target is written per scrape, its line here is b"")
_Lines = tuple[bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes]
_COLUMNS = 8


@dataclass(frozen=True, slots=True)
class _KpiText:
    """A KPI's sample lines for render(): whole where only a reload changes them, else
    the line up to its value."""

    target: bytes  # a fixed target's line, the line up to a glide path's value or plan, or b""
    glide: tuple[float, float, float, float] | None
    planned: bool
    thresholds: bytes  # the lines of thresholds in the KPI's unit
    percent: Thresholds | None
    levels: dict[str, bytes]  # severity -> the line up to its value (thresholds in %)
    info: bytes
    value: bytes
    interval: bytes
    evaluated: bytes
    # the status family's lines up to their values, one per status (STATUSES' order): four
    # whole blocks per KPI, one per current status, were 13 MiB of objects at 10,000 KPIs
    # (tracemalloc); RSS over 30 cycles came out 1 to 3 MiB lower (issue 15)
    status: tuple[bytes, ...]
    escalated: tuple[bytes, bytes]
    blind: tuple[bytes, bytes]
    never: _Lines  # never evaluated: unknown, not escalated, not blind, the configured cadence
    fixed_target: bytes  # the target's line that needs no state: a fixed target's, else b""

    @classmethod
    def of(cls, kpi: _KpiSeries) -> _KpiText:
        status = tuple(line_prefix(_STATUS, {**kpi.labels, "status": s.value}) for s in STATUSES)
        escalated = (sample_line(kpi.escalated[0]), sample_line(kpi.escalated[1]))
        blind = (sample_line(kpi.blind[0]), sample_line(kpi.blind[1]))
        interval = line_prefix(_INTERVAL, kpi.labels)
        target = fixed = b""
        if kpi.target is not None:
            target = fixed = sample_line(kpi.target)
        elif kpi.glide is not None or kpi.planned:
            target = line_prefix(_TARGET, kpi.labels)
        thresholds = b"".join(map(sample_line, kpi.thresholds))
        levels = {}
        if kpi.percent is not None:
            levels = {s: line_prefix(_THRESHOLD, {**kpi.labels, "severity": s})
                      for s in ("yellow", "red")}  # fmt: skip
        unknown = (b"", _status_lines(status, Status.UNKNOWN), escalated[False], blind[False],
                   interval + line_end(kpi.review), b"", fixed, thresholds)  # fmt: skip
        return cls(
            target=target,
            glide=kpi.glide,
            planned=kpi.planned,
            thresholds=thresholds,
            percent=kpi.percent,
            levels=levels,
            info=sample_line(kpi.info),
            value=line_prefix(_VALUE, kpi.labels),
            interval=interval,
            evaluated=line_prefix(_EVALUATED, kpi.labels),
            status=status,
            escalated=escalated,
            blind=blind,
            never=unknown,
            fixed_target=fixed,
        )

    def lines(self, state: ShownState) -> _Lines:
        when, value, plan = state.last_evaluated, _exported_value(state), state.plan
        target = self.fixed_target
        if self.planned and plan is not None:
            target = self.target + line_end(plan)
        thresholds = self.thresholds
        if self.percent is not None:
            thresholds = b"".join(
                self.levels[s] + line_end(level) for s, level in _plan_levels(self.percent, plan)
            )
        return (
            b"" if value is None else self.value + line_end(value),
            _status_lines(self.status, state.status),
            self.escalated[state.escalated],
            self.blind[state.blind],
            self.interval + line_end(state.review.nominal_seconds),
            b"" if when is None else self.evaluated + line_end(when.timestamp()),
            target,
            thresholds,
        )


def _status_lines(prefixes: tuple[bytes, ...], current: Status) -> bytes:
    """The status family's lines of a KPI: 1 for ``current``, 0 for the others."""
    return b"".join(
        prefix + (_ONE if status is current else _ZERO)
        for status, prefix in zip(STATUSES, prefixes, strict=True)
    )


class _RuleSetText:
    """render()'s share of a rule set: the fixed lines, and the lines of the states the
    last scrape showed, as one column per family with a row per KPI.

    A scrape re-renders only the KPIs whose state object changed: StateSnapshots
    returns the same ShownState while the row is unchanged, and a new one otherwise.
    A reload starts from the previous rule set's lines of every KPI it kept unchanged.
    """

    def __init__(
        self, ids: tuple[str, ...], texts: tuple[_KpiText, ...], previous: _RuleSetText | None
    ) -> None:
        self._ids = ids
        self._texts = texts
        # a glide path's value is written per scrape, into its row of the target column
        self._glides = [(i, t.target, t.glide) for i, t in enumerate(texts) if t.glide]
        self._info = b"".join(map(attrgetter("info"), texts))
        self._lock = threading.Lock()  # concurrent scrapes update and join one at a time
        self._shown, self._columns = self._start(previous)

    def _start(
        self, previous: _RuleSetText | None
    ) -> tuple[list[ShownState | None], tuple[list[bytes], ...]]:
        """The lines to start from: ``previous``'s state lines of the KPIs whose text it
        shares, "never evaluated" for the others (re-rendered at the next scrape)."""
        if previous is None:
            return self._never()
        with previous._lock:
            if self._ids == previous._ids and all(map(is_, self._texts, previous._texts)):
                # nothing shown changed (e.g. only a query): all of them
                return previous._shown.copy(), tuple(c.copy() for c in previous._columns)
            shown, columns = self._never()
            at = {kpi_id: j for j, kpi_id in enumerate(previous._ids)}
            kept = [
                (i, j)
                for i, (kpi_id, text) in enumerate(zip(self._ids, self._texts, strict=True))
                if (j := at.get(kpi_id)) is not None and previous._texts[j] is text
            ]
            for i, j in kept:
                shown[i] = previous._shown[j]
            for column, before in zip(columns, previous._columns, strict=True):
                for i, j in kept:
                    column[i] = before[j]
            return shown, columns

    def _never(self) -> tuple[list[ShownState | None], tuple[list[bytes], ...]]:
        columns = tuple([t.never[c] for t in self._texts] for c in range(_COLUMNS))  # see _Lines
        return [None] * len(self._ids), columns

    def bodies(self, states: Mapping[str, ShownState], now: float) -> list[tuple[str, bytes]]:
        """(family, its sample lines) for the per-KPI families, in collect()'s order."""
        current = list(map(states.get, self._ids))
        with self._lock:
            shown, texts = self._shown, self._texts
            columns = self._columns
            for i in compress(range(len(current)), map(is_not, current, shown)):
                state = shown[i] = current[i]
                lines = texts[i].never if state is None else texts[i].lines(state)
                for column, line in zip(columns, lines, strict=True):
                    column[i] = line
            targets = columns[6].copy()
            joined = [b"".join(column) for column in columns[:6]] + [b"".join(columns[7])]
        for i, prefix, glide in self._glides:
            targets[i] = prefix + line_end(glide_expected(now, *glide))
        return [
            (_VALUE, joined[0]), (_TARGET, b"".join(targets)), (_THRESHOLD, joined[6]),
            (_STATUS, joined[1]), (_ESCALATED, joined[2]), (_BLIND, joined[3]),
            (_INTERVAL, joined[4]), (_EVALUATED, joined[5]), (_INFO, self._info),
        ]  # fmt: skip


def _shown(kpi: Kpi) -> tuple[object, ...]:
    """What _KpiSeries.of() reads of a KPI: equal keys, equal lines (comparing whole Kpi
    models costs ~6 µs each, 60 ms a reload at 10,000 KPIs)."""
    levels, target = kpi.thresholds, kpi.target
    return (
        kpi.id, kpi.team, kpi.name, kpi.owner, kpi.unit, kpi.direction, kpi.review,
        levels and (levels.yellow, levels.red, levels.percent),
        target and (target.value, target.by, target.baseline, target.baseline_date),
        planned(kpi),
    )  # fmt: skip


class _RuleSetView:
    """What the scrapes of one rule set share; a reload brings a new one, which keeps
    the previous one's work for every KPI whose rules are unchanged."""

    def __init__(self, rules: RuleSet, tz: ZoneInfo, previous: _RuleSetView | None) -> None:
        self.rules = rules
        self._tz = tz
        before = previous.built if previous is not None else {}
        # only the text is kept: the samples it is written from would double what a
        # rule set costs here (~3 KiB a KPI, ~30 MiB at 10,000); collect() rebuilds them
        self.built: dict[str, tuple[tuple[object, ...], _KpiText]] = {}
        for kpi in rules.kpis:
            key = _shown(kpi)
            known = before.get(kpi.id)
            if known is None or known[0] != key:
                known = (key, _KpiText.of(_KpiSeries.of(kpi, tz)))
            self.built[kpi.id] = known
        ids = tuple(map(attrgetter("id"), rules.kpis))
        texts = tuple(map(itemgetter(1), map(self.built.__getitem__, ids)))
        self.text: _RuleSetText = _RuleSetText(ids, texts, previous.text if previous else None)

    @cached_property
    def series(self) -> tuple[_KpiSeries, ...]:
        """collect()'s samples per KPI, built on its first use (render() needs none: a
        scrape in the text or OpenMetrics format never builds them)."""
        return tuple(_KpiSeries.of(kpi, self._tz) for kpi in self.rules.kpis)


@dataclass(frozen=True, slots=True)
class _Scrape:
    """Everything one scrape shows, read before anything is written."""

    view: _RuleSetView
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
_PROBE = Sample(_VALUE, {"kpi": 'q"b\\s\nn', "team": "Größe 日本"}, 123456789.25)


def _writes_our_lines(encoder: Encoder) -> bool:
    """Whether ``encoder`` writes a sample line as render() does: the text format and
    OpenMetrics do, not so the "dots" or "values" name escaping a client may ask for."""
    probe = _family(_VALUE, ["kpi", "team"])
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
        self._view: _RuleSetView | None = None

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
        build = _family("kpiwatch_build_info", ["version"])
        _sample(build, {"version": __version__}, 1.0)
        yield build

    def _kpi_families(self, scrape: _Scrape) -> Iterator[Metric]:
        states, now = scrape.states, scrape.now
        families = [_family(name) for name in _PER_KPI]
        value, target, threshold, status, escalated, blind, interval, evaluated, info = (
            family.samples.append for family in families
        )
        for kpi in scrape.view.series:  # plain appends, helper calls only for plans
            state = states.get(kpi.id)
            if kpi.target is not None:
                target(kpi.target)
            elif kpi.glide is not None:
                target(Sample(_TARGET, kpi.labels, glide_expected(now, *kpi.glide)))
            elif kpi.planned and state is not None and state.plan is not None:
                target(Sample(_TARGET, kpi.labels, state.plan))
            for sample in kpi.thresholds:
                threshold(sample)
            if kpi.percent is not None and state is not None:
                for severity, level in _plan_levels(kpi.percent, state.plan):
                    threshold(Sample(_THRESHOLD, {**kpi.labels, "severity": severity}, level))
            info(kpi.info)
            if state is None:  # never evaluated: unknown, not escalated, configured cadence
                for sample in kpi.status[Status.UNKNOWN]:
                    status(sample)
                escalated(kpi.escalated[False])
                blind(kpi.blind[False])
                interval(Sample(_INTERVAL, kpi.labels, kpi.review))
                continue
            if (shown := _exported_value(state)) is not None:
                value(Sample(_VALUE, kpi.labels, shown))
            for sample in kpi.status[state.status]:
                status(sample)
            escalated(kpi.escalated[state.escalated])
            blind(kpi.blind[state.blind])
            interval(Sample(_INTERVAL, kpi.labels, state.review.nominal_seconds))
            if state.last_evaluated is not None:
                evaluated(Sample(_EVALUATED, kpi.labels, state.last_evaluated.timestamp()))
        yield from families

    def _view_of(self, rules: RuleSet) -> _RuleSetView:
        """What never changes between two reloads, built once per rule set."""
        view = self._view
        if view is None or view.rules is not rules:
            view = _RuleSetView(rules, self._tz, view)
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
