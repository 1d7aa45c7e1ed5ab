"""Each KPI's lines of ``/metrics``: the samples only its rules decide, built once per
KPI definition, and the text of the lines its state decides, kept per state between
scrapes (see :mod:`kpiwatch.web.exporter`, which writes the families around them).

The lines are written byte for byte as prometheus_client writes them
(:mod:`kpiwatch.web.exposition`).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from itertools import compress
from operator import attrgetter, is_, is_not, itemgetter
from zoneinfo import ZoneInfo

from prometheus_client.samples import Sample

from kpiwatch.config.rules import Kpi, RuleSet, Thresholds
from kpiwatch.evaluation.judging import resolved_thresholds
from kpiwatch.evaluation.target import day_start, glide_expected
from kpiwatch.model import Status
from kpiwatch.notify.text import planned
from kpiwatch.store.snapshot import ShownState
from kpiwatch.web.exposition import line_end, line_prefix, sample_line

STATUSES = tuple(Status)
_ONE, _ZERO = line_end(1.0), line_end(0.0)

# the per-KPI families (labelled kpi and team)
VALUE = "kpiwatch_kpi_value"
TARGET = "kpiwatch_kpi_target"
THRESHOLD = "kpiwatch_kpi_threshold"
STATUS = "kpiwatch_kpi_status"
ESCALATED = "kpiwatch_kpi_escalated"
BLIND = "kpiwatch_kpi_blind"
INTERVAL = "kpiwatch_kpi_review_interval_seconds"
EVALUATED = "kpiwatch_kpi_last_evaluation_timestamp_seconds"
INFO = "kpiwatch_kpi_info"
PER_KPI = (
    VALUE, TARGET, THRESHOLD, STATUS, ESCALATED, BLIND, INTERVAL, EVALUATED, INFO,
)  # fmt: skip


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
class KpiSeries:
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
    def of(cls, kpi: Kpi, tz: ZoneInfo) -> KpiSeries:  # reads only what rules_key() returns
        team = kpi.team or ""
        labels = {"kpi": kpi.id, "team": team}
        plan = planned(kpi)
        glide = None if plan else glide_path(kpi, tz)
        fixed = kpi.target is not None and glide is None and not plan
        levels = kpi.thresholds
        percent = levels if levels is not None and levels.percent else None
        by_status = [{**labels, "status": s.value} for s in STATUSES]
        one_hot = {
            s: (Sample(STATUS, lb, 0.0), Sample(STATUS, lb, 1.0))
            for s, lb in zip(STATUSES, by_status, strict=True)
        }
        info = {"kpi": kpi.id, "name": kpi.name, "team": team, "owner": kpi.owner,
                "unit": kpi.unit, "direction": kpi.direction.value}  # fmt: skip
        return cls(
            id=kpi.id,
            labels=labels,
            review=kpi.review.nominal_seconds,
            target=Sample(TARGET, labels, kpi.target.value)
            if fixed and kpi.target and kpi.target.value is not None
            else None,
            glide=glide,
            planned=plan,
            thresholds=()
            if percent is not None
            else tuple(
                Sample(THRESHOLD, {**labels, "severity": severity}, level)
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
            escalated=(Sample(ESCALATED, labels, 0.0), Sample(ESCALATED, labels, 1.0)),
            blind=(Sample(BLIND, labels, 0.0), Sample(BLIND, labels, 1.0)),
            info=Sample(INFO, info, 1.0),
        )


def plan_levels(levels: Thresholds, plan: float | None) -> tuple[tuple[str, float], ...]:
    """(severity, level) of thresholds in % of the plan against ``plan``: none without one."""
    yellow, red = resolved_thresholds(levels, plan)
    return tuple((s, level) for s, level in (("yellow", yellow), ("red", red)) if level is not None)


def exported_value(state: ShownState) -> float | None:
    """The value exported: none while the KPI is unknown, as in 0.1, although a blind
    state keeps its last value for the board (the value is its verdict's, not news)."""
    return None if state.status is Status.UNKNOWN else state.value


# -- render(): the per-KPI sample lines, written as prometheus_client writes them


# a KPI's lines of the families its state decides: value, status, escalated, blind, interval,
# evaluated, target, thresholds (the last two are the rules' own unless there is a plan; a
# glide path's target is written per scrape, its line here is b"")
Lines = tuple[bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes]
COLUMNS = 8


@dataclass(frozen=True, slots=True)
class KpiText:
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
    review: int  # seconds of the configured cadence, shown until the first evaluation
    fixed_target: bytes  # the target's line that needs no state: a fixed target's, else b""

    @classmethod
    def of(cls, kpi: KpiSeries) -> KpiText:
        status = tuple(line_prefix(STATUS, {**kpi.labels, "status": s.value}) for s in STATUSES)
        escalated = (sample_line(kpi.escalated[0]), sample_line(kpi.escalated[1]))
        blind = (sample_line(kpi.blind[0]), sample_line(kpi.blind[1]))
        interval = line_prefix(INTERVAL, kpi.labels)
        target = fixed = b""
        if kpi.target is not None:
            target = fixed = sample_line(kpi.target)
        elif kpi.glide is not None or kpi.planned:
            target = line_prefix(TARGET, kpi.labels)
        thresholds = b"".join(map(sample_line, kpi.thresholds))
        levels = {}
        if kpi.percent is not None:
            levels = {s: line_prefix(THRESHOLD, {**kpi.labels, "severity": s})
                      for s in ("yellow", "red")}  # fmt: skip
        return cls(
            target=target,
            glide=kpi.glide,
            planned=kpi.planned,
            thresholds=thresholds,
            percent=kpi.percent,
            levels=levels,
            info=sample_line(kpi.info),
            value=line_prefix(VALUE, kpi.labels),
            interval=interval,
            evaluated=line_prefix(EVALUATED, kpi.labels),
            status=status,
            escalated=escalated,
            blind=blind,
            review=kpi.review,
            fixed_target=fixed,
        )

    def never(self) -> Lines:
        """The lines of a KPI never evaluated: unknown, not escalated, not blind, the
        configured cadence. Built when needed (a start, a reload, a KPI without a state):
        kept, they were ~5 MiB at 10,000 KPIs that only the first scrapes use (issue 15)."""
        status = status_lines(self.status, Status.UNKNOWN)
        interval = self.interval + line_end(self.review)
        return (b"", status, self.escalated[False], self.blind[False], interval, b"",
                self.fixed_target, self.thresholds)  # fmt: skip

    def lines(self, state: ShownState) -> Lines:
        when, value, plan = state.last_evaluated, exported_value(state), state.plan
        target = self.fixed_target
        if self.planned and plan is not None:
            target = self.target + line_end(plan)
        thresholds = self.thresholds
        if self.percent is not None:
            thresholds = b"".join(
                self.levels[s] + line_end(level) for s, level in plan_levels(self.percent, plan)
            )
        return (
            b"" if value is None else self.value + line_end(value),
            status_lines(self.status, state.status),
            self.escalated[state.escalated],
            self.blind[state.blind],
            self.interval + line_end(state.review.nominal_seconds),
            b"" if when is None else self.evaluated + line_end(when.timestamp()),
            target,
            thresholds,
        )


def status_lines(prefixes: tuple[bytes, ...], current: Status) -> bytes:
    """The status family's lines of a KPI: 1 for ``current``, 0 for the others."""
    return b"".join(
        prefix + (_ONE if status is current else _ZERO)
        for status, prefix in zip(STATUSES, prefixes, strict=True)
    )


class RuleSetText:
    """render()'s share of a rule set: the fixed lines, and the lines of the states the
    last scrape showed, as one column per family with a row per KPI.

    A scrape re-renders only the KPIs whose state object changed: StateSnapshots
    returns the same ShownState while the row is unchanged, and a new one otherwise.
    A reload starts from the previous rule set's lines of every KPI it kept unchanged.
    """

    def __init__(
        self, ids: tuple[str, ...], texts: tuple[KpiText, ...], previous: RuleSetText | None
    ) -> None:
        self._ids = ids
        self._texts = texts
        # a glide path's value is written per scrape, into its row of the target column
        self._glides = [(i, t.target, t.glide) for i, t in enumerate(texts) if t.glide]
        self._info = b"".join(map(attrgetter("info"), texts))
        self._lock = threading.Lock()  # concurrent scrapes update and join one at a time
        self.rules_key, self._columns = self._start(previous)

    def _start(
        self, previous: RuleSetText | None
    ) -> tuple[list[ShownState | None], tuple[list[bytes], ...]]:
        """The lines to start from: ``previous``'s state lines of the KPIs whose text it
        shares, "never evaluated" for the others (re-rendered at the next scrape)."""
        if previous is None:
            return self._never()
        with previous._lock:
            if self._ids == previous._ids and all(map(is_, self._texts, previous._texts)):
                # nothing shown changed (e.g. only a query): all of them
                return previous.rules_key.copy(), tuple(c.copy() for c in previous._columns)
            shown, columns = self._never()
            at = {kpi_id: j for j, kpi_id in enumerate(previous._ids)}
            kept = [
                (i, j)
                for i, (kpi_id, text) in enumerate(zip(self._ids, self._texts, strict=True))
                if (j := at.get(kpi_id)) is not None and previous._texts[j] is text
            ]
            for i, j in kept:
                shown[i] = previous.rules_key[j]
            for column, before in zip(columns, previous._columns, strict=True):
                for i, j in kept:
                    column[i] = before[j]
            return shown, columns

    def _never(self) -> tuple[list[ShownState | None], tuple[list[bytes], ...]]:
        rows = [t.never() for t in self._texts]
        columns = tuple([row[c] for row in rows] for c in range(COLUMNS))  # see Lines
        return [None] * len(self._ids), columns

    def bodies(self, states: Mapping[str, ShownState], now: float) -> list[tuple[str, bytes]]:
        """(family, its sample lines) for the per-KPI families, in collect()'s order."""
        current = list(map(states.get, self._ids))
        with self._lock:
            shown, texts = self.rules_key, self._texts
            columns = self._columns
            for i in compress(range(len(current)), map(is_not, current, shown)):
                state = shown[i] = current[i]
                lines = texts[i].never() if state is None else texts[i].lines(state)
                for column, line in zip(columns, lines, strict=True):
                    column[i] = line
            targets = columns[6].copy()
            joined = [b"".join(column) for column in columns[:6]] + [b"".join(columns[7])]
        for i, prefix, glide in self._glides:
            targets[i] = prefix + line_end(glide_expected(now, *glide))
        return [
            (VALUE, joined[0]), (TARGET, b"".join(targets)), (THRESHOLD, joined[6]),
            (STATUS, joined[1]), (ESCALATED, joined[2]), (BLIND, joined[3]),
            (INTERVAL, joined[4]), (EVALUATED, joined[5]), (INFO, self._info),
        ]  # fmt: skip


def rules_key(kpi: Kpi) -> tuple[object, ...]:
    """What KpiSeries.of() reads of a KPI: equal keys, equal lines (comparing whole Kpi
    models costs ~6 µs each, 60 ms a reload at 10,000 KPIs)."""
    levels, target = kpi.thresholds, kpi.target
    return (
        kpi.id, kpi.team, kpi.name, kpi.owner, kpi.unit, kpi.direction, kpi.review,
        levels and (levels.yellow, levels.red, levels.percent),
        target and (target.value, target.by, target.baseline, target.baseline_date),
        planned(kpi),
    )  # fmt: skip


class RuleSetView:
    """What the scrapes of one rule set share; a reload brings a new one, which keeps
    the previous one's work for every KPI whose rules are unchanged."""

    def __init__(self, rules: RuleSet, tz: ZoneInfo, previous: RuleSetView | None) -> None:
        self.rules = rules
        self._tz = tz
        before = previous.built if previous is not None else {}
        # only the text is kept: the samples it is written from would double what a
        # rule set costs here (~3 KiB a KPI, ~30 MiB at 10,000); collect() rebuilds them
        self.built: dict[str, tuple[tuple[object, ...], KpiText]] = {}
        for kpi in rules.kpis:
            key = rules_key(kpi)
            known = before.get(kpi.id)
            if known is None or known[0] != key:
                known = (key, KpiText.of(KpiSeries.of(kpi, tz)))
            self.built[kpi.id] = known
        ids = tuple(map(attrgetter("id"), rules.kpis))
        texts = tuple(map(itemgetter(1), map(self.built.__getitem__, ids)))
        self.text: RuleSetText = RuleSetText(ids, texts, previous.text if previous else None)

    @cached_property
    def series(self) -> tuple[KpiSeries, ...]:
        """collect()'s samples per KPI, built on its first use (render() needs none: a
        scrape in the text or OpenMetrics format never builds them)."""
        return tuple(KpiSeries.of(kpi, self._tz) for kpi in self.rules.kpis)
