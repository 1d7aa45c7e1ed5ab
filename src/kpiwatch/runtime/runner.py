"""The evaluation cycle for one KPI: fetch -> evaluate (pure) -> persist with its outbox rows.

Thread-safe: the scheduler's pool calls it concurrently for different KPIs; a
per-KPI lock keeps a scheduled run, a formula re-run and a review tick of the
same KPI from interleaving.
"""

from __future__ import annotations

import random
import threading
import time as _time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from functools import partial
from zoneinfo import ZoneInfo

import structlog

from kpiwatch.clock import Clock
from kpiwatch.config.rules import Kpi, SqlSource
from kpiwatch.errors import (
    EvaluationSuperseded,
    SourceError,
    StoreError,
)
from kpiwatch.evaluation import (
    DEFAULT_REMINDERS,
    ReminderPolicy,
    evaluate,
    history_points,
    history_window,
)
from kpiwatch.evaluation.incidents import KpiOutcome, SourceHealth, freshness_problem
from kpiwatch.evaluation.restatements import restated_points, restatements
from kpiwatch.evaluation.retention import kept_history, retained
from kpiwatch.model import Evaluation, Event, KpiState, Observation
from kpiwatch.runtime.fetcher import Fetched, Fetcher, over_blind_inputs
from kpiwatch.runtime.source_watch import HealthChange, SourceWatch
from kpiwatch.runtime.ticks import StateTicks
from kpiwatch.runtime.workspace import Workspace
from kpiwatch.store.fencing import Basis
from kpiwatch.store.repository import EvaluationToSave, Store
from kpiwatch.store.transactions import transient

log = structlog.get_logger("kpiwatch.runner")

# KPIs a worker of evaluate_all fetches, then reads, evaluates and saves together:
# one transaction per batch instead of three per KPI. A steady cycle of 10,000 SQL KPIs
# on PostgreSQL took 23 % less time with batches of 500 than of 100 (fewer statements,
# transactions, fetch runs and hand-offs per KPI), for ~10 MiB more RSS at 10,000
# KPIs (more rows in flight; issue 15)
BATCH = 500


@dataclass
class CycleStats:
    """Counts of one run over many KPIs, for logs and `run --once`."""

    evaluated: int = 0
    failed: int = 0
    by_status: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    failed_ids: set[str] = field(default_factory=set)  # whose claims are let go, not finished

    def add(self, other: CycleStats) -> None:
        self.evaluated += other.evaluated
        self.failed += other.failed
        for status, count in other.by_status.items():
            self.by_status[status] += count
        self.failed_ids |= other.failed_ids


class Runner(StateTicks):
    def __init__(
        self,
        store: Store,
        clock: Clock,
        workspace: Workspace,
        *,
        tz: ZoneInfo,
        review_time: time,
        max_workers: int = 8,
        fetch_grace: float = 2.0,
        reminders: ReminderPolicy = DEFAULT_REMINDERS,  # the settings' defaults
        blind_notice_after: timedelta = timedelta(days=1),  # KPIWATCH_BLIND_NOTICE_AFTER
        retention: timedelta | None = None,  # KPIWATCH_RETENTION; None: store every point
    ) -> None:
        self._store = store
        self._clock = clock
        self._workspace = workspace
        self._tz = tz
        self._review_time = review_time
        self._reminders = reminders
        self._retention = retention
        self._max_workers = max_workers
        self._fetcher = Fetcher(clock, tz, fetch_grace, self._fetched)
        self._locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._locks_guard = threading.Lock()
        # one pool for every batch: the scheduler runs several batches at once, and the
        # pool bounds their fetches together (KPIWATCH_MAX_WORKERS)
        self._pool: ThreadPoolExecutor | None = None
        self._watch = SourceWatch(
            {name: SourceHealth(up, since, error)
             for name, (up, since, error) in store.source_health().items()},
            blind_notice_after,
        )  # fmt: skip
        self.on_evaluated: Callable[[Evaluation], None] | None = None  # hook for metrics
        self.on_fetched: Callable[[str, float], None] | None = None  # (source, seconds)
        self.on_failed: Callable[[str], None] | None = None  # an evaluation that raised
        self.on_reminded: Callable[[Event], None] | None = None  # a reminder stored

    def _fetched(self, source: str, seconds: float) -> None:
        if self.on_fetched is not None:
            self.on_fetched(source, seconds)

    @property
    def workspace(self) -> Workspace:
        return self._workspace

    def close(self) -> None:
        """Stop the evaluation pool (after the scheduler: no batch is running)."""
        with self._locks_guard:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def _workers(self) -> ThreadPoolExecutor:
        with self._locks_guard:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._max_workers,
                                                thread_name_prefix="kpiwatch-eval")  # fmt: skip
            return self._pool

    def swap(self, workspace: Workspace) -> Workspace:
        """Install a new rule set; returns the old one for the caller to close."""
        old, self._workspace = self._workspace, workspace
        with self._locks_guard:  # the locks of KPIs a reload removed, unless one is held
            known = workspace.rules.by_id
            for kpi_id in [k for k, lock in self._locks.items()
                           if k not in known and not lock.locked()]:  # fmt: skip
                del self._locks[kpi_id]
        return old

    # ------------------------------------------------------------ evaluation

    def evaluate_kpi(
        self, kpi_id: str, *, persist: bool = True, follow: bool = True
    ) -> Evaluation | None:
        """Fetch and evaluate one KPI now; then its dependent formulas when ``follow``.

        Never raises for a source or KPI problem (that becomes ``unknown``); a store
        failure is logged and re-raised so the scheduler counts it.
        """
        workspace = self._workspace
        kpi = workspace.rules.by_id.get(kpi_id)
        if kpi is None:
            return None
        with self._lock_for(kpi_id):
            try:
                evaluation = self._evaluate_locked(workspace, kpi, persist)
            except Exception:
                if self.on_failed is not None:
                    self.on_failed(kpi_id)
                raise
        if follow and persist:
            for dependent in workspace.rules.dependents.get(kpi_id, ()):
                if self._inputs_ready(workspace, dependent):
                    self.evaluate_kpi(dependent, persist=persist, follow=True)
        return evaluation

    def _inputs_ready(self, workspace: Workspace, formula: str) -> bool:
        """Whether every input of a formula has a value: following into it earlier
        would only flap it through unknown while its other inputs are first read."""
        inputs = workspace.rules.formula_inputs.get(formula, frozenset())
        return not inputs or len(self._store.latest_of(inputs)) == len(inputs)

    def _evaluate_locked(self, workspace: Workspace, kpi: Kpi, persist: bool) -> Evaluation:
        now = self._clock.now()
        fetched = self._fetcher.fetch(workspace, kpi, now)
        inputs = workspace.rules.formula_inputs.get(kpi.id)
        if inputs:
            fetched = over_blind_inputs(workspace, kpi, fetched, self._store.states_of(inputs))
        if persist:
            self._note_fetch(workspace, kpi, fetched, now)
        # state and history through one connection: one checkout instead of two
        window = now - history_window(kpi)
        points = history_points(kpi)  # only the newest points its rules read
        newest = None if points is None else {kpi.id: points}
        previous, stored = self._store.evaluation_inputs([kpi.id], since=window,
                                                         newest=newest)[kpi.id]  # fmt: skip
        evaluation, restated = self._judge(workspace, kpi, stored, previous, now, fetched)
        if not persist:
            return evaluation
        deliveries = {event.key: workspace.router.route(event) for event in evaluation.events}
        try:
            self._store.save_evaluation(
                evaluation, deliveries, observations=self._to_store(kpi, now, fetched),
                based_on=Basis.of(previous), restated=restated,
            )  # fmt: skip
        except EvaluationSuperseded as exc:  # the newer evaluation stands; nothing to redo
            log.info("evaluation dropped", kpi=kpi.id, reason=str(exc))
            return evaluation
        self._note_stale(workspace, [(kpi, self._after_save(workspace, kpi, evaluation, now))])
        return evaluation

    def _judge(
        self,
        workspace: Workspace,
        kpi: Kpi,
        stored: list[Observation],
        previous: KpiState | None,
        now: datetime,
        fetched: Fetched,
    ) -> tuple[Evaluation, list[Observation]]:
        """evaluate() over the stored history with the fetched points, with what the
        runner knows of the KPI's source: its freshness check failing blinds every KPI
        it feeds, and decides whose problem it is. Also the late data: the periods a
        poll restated (their events join the evaluation's) and the points to replace."""
        error, source_wide = fetched.error, fetched.source_wide
        stale = self._watch.freshness_problem(kpi.source)
        if error is None and stale is not None:
            error, source_wide = f"source {kpi.source!r}: {stale}", True
        history = merged_history(stored, fetched.observations)
        evaluation = evaluate(
            kpi,
            history,
            previous,
            now,
            error=error,
            tz=self._tz,
            review_time=self._review_time,
            data=self._watch.context(workspace.rules, kpi, source_wide, via=fetched.via),
            plans=fetched.plans,
        )
        if kpi.period is None:
            return evaluation, []
        restated = restatements(kpi, stored, history, now, self._tz, now - history_window(kpi))
        if restated:
            evaluation = evaluation._replace(events=restated + evaluation.events)
        return evaluation, restated_points(kpi, stored, fetched.observations)

    def _note_fetch(self, workspace: Workspace, kpi: Kpi, fetched: Fetched, now: datetime) -> None:
        """Tell the source watch how the fetch went, before the evaluation asks it whose
        problem a failure is: the source's incident opens with the first failure of it."""
        self._note_fetches(workspace, [(kpi, now, fetched)])

    def _note_fetches(
        self, workspace: Workspace, fetches: Sequence[tuple[Kpi, datetime, Fetched]]
    ) -> None:
        """:meth:`_note_fetch` for a batch fetched together: one step of each source."""
        outcomes = [(kpi, KpiOutcome(now, one.error is not None, one.source_wide,
                                     reason=one.error))
                    for kpi, now, one in fetches]  # fmt: skip
        for change in self._watch.record_many(workspace.rules, outcomes):
            self._save_health(workspace, change)

    def _after_save(
        self, workspace: Workspace, kpi: Kpi, evaluation: Evaluation, now: datetime
    ) -> KpiOutcome | None:
        """Log and count a saved evaluation; its stale outcome for the source watch (several
        stale KPIs are their source's incident), which the caller records."""
        for event in evaluation.events:
            log.debug("event", kind=event.kind.value, kpi=kpi.id, **_loggable(event))
        if self.on_evaluated is not None:
            self.on_evaluated(evaluation)
        stale = next((f for f in evaluation.findings if f.rule == "stale"), None)
        return None if stale is None else KpiOutcome(now, True, stale=True, reason=stale.reason)

    def _note_stale(
        self, workspace: Workspace, stale: Sequence[tuple[Kpi, KpiOutcome | None]]
    ) -> None:
        found = [(kpi, outcome) for kpi, outcome in stale if outcome is not None]
        for change in self._watch.record_many(workspace.rules, found) if found else ():
            self._save_health(workspace, change)

    def _save_health(self, workspace: Workspace, change: HealthChange | None) -> None:
        """Persist a source's incident opening or closing, with its event."""
        if change is None:
            return
        health = change.health
        deliveries = {e.key: workspace.router.route(e) for e in change.events}
        try:
            self._store.set_source_health(
                change.source, up=health.up, now=health.since, error=health.reason,
                events=change.events, deliveries=deliveries,
            )  # fmt: skip
        except StoreError as exc:  # the evaluations go on; the next change is saved
            log.error("could not record source health", source=change.source, error=str(exc))

    def tick_freshness(self) -> int:
        """Run the ``freshness`` checks that are due; returns how many ran.

        A source whose last load is older than its ``max_age`` (or whose check
        fails) opens its data incident, even before any KPI goes stale.
        """
        workspace = self._workspace
        ran = 0
        for name, config in workspace.rules.sources.items():
            now = self._clock.now()
            if not isinstance(config, SqlSource) or config.freshness is None:
                continue
            freshness = config.freshness
            if not self._watch.freshness_due(name, freshness.every, now):
                continue
            source = workspace.sources.get(name)
            latest_load = getattr(source, "latest_load", None)
            if latest_load is None:
                continue
            try:
                problem = freshness_problem(latest_load(freshness.query), now, freshness.max_age)
            except SourceError as exc:
                problem = f"freshness check failed: {exc.reason}"
            ran += 1
            change = self._watch.record_freshness(workspace.rules, name, problem, now)
            self._save_health(workspace, change)
        return ran

    # ------------------------------------------------------------ many KPIs

    def evaluate_all(self, kpi_ids: Iterable[str] | None = None) -> CycleStats:
        """Evaluate KPIs once, formulas after their inputs, fetches in a bounded pool.

        A level's KPIs are fetched first, every batch in its worker; then each
        worker reads its batch's states and history together, evaluates them and
        saves them in one transaction. Fetching the whole level first means every
        KPI of a source is known to work or fail before any is judged, so "every KPI
        of the source fails" is a data incident, not each KPI's own problem (SPEC
        §5a). A level's batches are all saved before the next level starts, so
        formulas see their inputs' fresh values.
        """
        workspace = self._workspace
        by_id = workspace.rules.by_id
        wanted = set(kpi_ids) if kpi_ids is not None else set(by_id)
        stats = CycleStats()
        pool = self._workers()
        for level in _levels(workspace, wanted):
            batches = _batches(level, self._max_workers)
            with ExitStack() as held:
                for kpi_id in sorted(level):  # one order everywhere: no lock cycles
                    held.enter_context(self._lock_for(kpi_id))
                fetch = partial(self._fetcher.fetch_many, workspace)
                fetched = list(pool.map(fetch, [[by_id[k] for k in b] for b in batches]))
                _log_failed_fetches(workspace, batches, fetched)
                fetched = self._check_formula_inputs(workspace, batches, fetched)
                self._note_fetches(workspace, [
                    (by_id[kpi_id], now, one)
                    for batch, got in zip(batches, fetched, strict=True)
                    for kpi_id, (now, one) in zip(batch, got, strict=True)
                ])  # fmt: skip
                evaluate_batch = partial(self._evaluate_batch, workspace)
                results = list(pool.map(evaluate_batch, batches, fetched))
            for outcomes in results:
                for kpi_id, outcome in outcomes:
                    if outcome is None:
                        stats.failed += 1
                        stats.failed_ids.add(kpi_id)
                        log.error("evaluation failed", kpi=kpi_id)
                        continue
                    stats.evaluated += 1
                    stats.by_status[outcome.status.value] += 1
        return stats

    def evaluate_due(self, kpi_ids: Sequence[str]) -> CycleStats:
        """A batch of KPIs that fell due together, through :meth:`evaluate_all`; then
        the formulas over them, once per batch (not once per input), when every input
        has a value (before that they would only flap through unknown)."""
        stats = self.evaluate_all(kpi_ids)
        workspace = self._workspace
        followers = _dependents(workspace, set(kpi_ids))
        if followers:
            inputs = {i for f in followers for i in workspace.rules.formula_inputs.get(f, ())}
            have = set(self._store.latest_of(inputs)) | followers
            ready = {f for f in followers
                     if have.issuperset(workspace.rules.formula_inputs.get(f, ()))}  # fmt: skip
            if ready:
                stats.add(self.evaluate_all(ready))
        return stats

    def _check_formula_inputs(
        self,
        workspace: Workspace,
        batches: Sequence[Sequence[str]],
        fetched: list[list[tuple[datetime, Fetched]]],
    ) -> list[list[tuple[datetime, Fetched]]]:
        """A level's formula fetches, each blind when one of its inputs is: one read of
        the inputs' states for the whole level (they were saved by earlier levels)."""
        formulas = workspace.rules.formula_inputs
        wanted = {name for batch in batches for kpi_id in batch
                  for name in formulas.get(kpi_id, ())}  # fmt: skip
        if not wanted:
            return fetched
        states = self._store.states_of(wanted)
        by_id = workspace.rules.by_id
        return [
            [(now, over_blind_inputs(workspace, by_id[kpi_id], one, states))
             for kpi_id, (now, one) in zip(batch, got, strict=True)]
            for batch, got in zip(batches, fetched, strict=True)
        ]  # fmt: skip

    def _evaluate_batch(
        self,
        workspace: Workspace,
        kpi_ids: Sequence[str],
        fetched: Sequence[tuple[datetime, Fetched]],
    ) -> list[tuple[str, Evaluation | None]]:
        """Evaluate and save a fetched batch of KPIs, whose locks the caller holds; a KPI
        that fails is None, the others count."""
        kpis = [workspace.rules.by_id[kpi_id] for kpi_id in kpi_ids]
        try:
            since = min(
                now - history_window(kpi) for kpi, (now, _) in zip(kpis, fetched, strict=True)
            )
            # only the newest points each KPI's rules read: a whole window of history
            # grew every cycle's reads (and memory) with every point stored
            newest = {kpi.id: n for kpi in kpis if (n := history_points(kpi)) is not None}
            inputs = self._store.evaluation_inputs(kpi_ids, since=since, newest=newest)
        except StoreError as exc:
            log.error("could not read states and history", error=str(exc))
            return [(kpi.id, self._failed(kpi.id)) for kpi in kpis]
        outcomes: dict[str, Evaluation | None] = {}
        done: list[tuple[Kpi, datetime]] = []
        batch: list[EvaluationToSave] = []
        for kpi, (now, got) in zip(kpis, fetched, strict=True):
            previous, stored = inputs[kpi.id]
            window = now - history_window(kpi)
            recent = [o for o in stored if o.observed_at >= window]
            try:
                evaluation, restated = self._judge(workspace, kpi, recent, previous, now, got)
                deliveries = {e.key: workspace.router.route(e) for e in evaluation.events}
            except Exception:  # a bug for this KPI only
                log.exception("evaluation crashed", kpi=kpi.id)
                outcomes[kpi.id] = self._failed(kpi.id)
                continue
            basis = Basis.of(previous)
            batch.append(
                EvaluationToSave(
                    evaluation, deliveries, self._to_store(kpi, now, got), basis, restated
                )
            )
            done.append((kpi, now))
        saved, dropped = self._save_batch(batch)
        stale: list[tuple[Kpi, KpiOutcome | None]] = []
        for (kpi, now), item in zip(done, batch, strict=True):
            if kpi.id in dropped:  # a newer evaluation stands: not a failure
                outcomes[kpi.id] = item.evaluation
                continue
            if kpi.id not in saved:
                outcomes[kpi.id] = self._failed(kpi.id)
                continue
            outcomes[kpi.id] = item.evaluation
            stale.append((kpi, self._after_save(workspace, kpi, item.evaluation, now)))
        self._note_stale(workspace, stale)
        return [(kpi.id, outcomes[kpi.id]) for kpi in kpis]

    def _to_store(self, kpi: Kpi, now: datetime, fetched: Fetched) -> Sequence[Observation]:
        """The points of a poll that are stored: all of them, or what the retention keeps
        (a series source's older rows would be deleted again by the next prune)."""
        if self._retention is None:
            return fetched.observations
        return retained(kept_history(kpi, now, self._retention), fetched.observations)

    def _save_batch(self, batch: Sequence[EvaluationToSave]) -> tuple[set[str], set[str]]:
        """Save in one transaction; when that fails, one by one. The KPI ids saved, and
        those dropped because the KPI was evaluated meanwhile (elsewhere)."""
        for attempt in range(2):
            try:
                self._store.save_evaluations(batch)
            except Exception as exc:
                # batches saved at once may deadlock (MariaDB's gap locks on a first run's
                # new rows): the database rolled one back, and again it goes through
                if attempt == 0 and transient(exc):
                    log.info("saving a batch met a deadlock; saving it again", error=str(exc))
                    _time.sleep(random.uniform(0.01, 0.1))
                    continue
                if len(batch) > 1:
                    log.warning("saving a batch failed; saving its KPIs one by one",
                                error=str(exc))  # fmt: skip
                break
            else:
                return {item.evaluation.kpi_id for item in batch}, set()
        saved: set[str] = set()
        dropped: set[str] = set()
        for item in batch:
            kpi_id = item.evaluation.kpi_id
            try:
                self._store.save_evaluation(
                    item.evaluation, item.deliveries, observations=item.observations,
                    based_on=item.based_on, restated=item.restated,
                )  # fmt: skip
            except EvaluationSuperseded as exc:  # not a failure: a newer evaluation stands
                log.info("evaluation dropped", kpi=kpi_id, reason=str(exc))
                dropped.add(kpi_id)
            except StoreError as exc:
                log.error("could not save evaluation", kpi=kpi_id, error=str(exc))
            except Exception:
                log.exception("could not save evaluation", kpi=kpi_id)
            else:
                saved.add(kpi_id)
        return saved, dropped

    def _failed(self, kpi_id: str) -> Evaluation | None:
        """Count a KPI whose evaluation failed; its outcome in a batch (None)."""
        if self.on_failed is not None:
            self.on_failed(kpi_id)
        return None

    def _lock_for(self, kpi_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks[kpi_id]


def _log_failed_fetches(
    workspace: Workspace,
    batches: Sequence[Sequence[str]],
    fetched: Sequence[Sequence[tuple[datetime, Fetched]]],
) -> None:
    """One warning per source whose fetches failed in this run, with the first KPI and
    its error: a source that is down fails every one of its KPIs each round, and a line
    per KPI (10,000 every 10 s) would drown the log."""
    failed: dict[str, list[tuple[str, str]]] = {}
    tried: Counter[str] = Counter()
    for batch, got in zip(batches, fetched, strict=True):
        for kpi_id, (_, one) in zip(batch, got, strict=True):
            source = workspace.rules.by_id[kpi_id].source
            tried[source] += 1
            if one.error is not None:
                failed.setdefault(source, []).append((kpi_id, one.error))
    for source, errors in failed.items():
        first, error = errors[0]
        log.warning("fetches failed", source=source, failed=len(errors), of=tried[source],
                    first=first, error=error)  # fmt: skip


def _levels(workspace: Workspace, wanted: set[str]) -> list[list[str]]:
    """KPIs grouped so each group only reads KPIs of earlier groups (formula depth)."""
    inputs = workspace.rules.formula_inputs
    depth: dict[str, int] = {}
    for kpi_id in workspace.rules.evaluation_order:  # inputs come first
        depth[kpi_id] = 1 + max((depth.get(i, 0) for i in inputs.get(kpi_id, ())), default=-1)
    levels: dict[int, list[str]] = defaultdict(list)
    for kpi_id in workspace.rules.evaluation_order:
        if kpi_id in wanted:
            levels[depth[kpi_id]].append(kpi_id)
    return [levels[d] for d in sorted(levels)]


def _dependents(workspace: Workspace, kpi_ids: set[str]) -> set[str]:
    """The formulas over ``kpi_ids``, and the formulas over those, not in ``kpi_ids``."""
    found: set[str] = set()
    todo = list(kpi_ids)
    while todo:
        for dependent in workspace.rules.dependents.get(todo.pop(), ()):
            if dependent not in found and dependent not in kpi_ids:
                found.add(dependent)
                todo.append(dependent)
    return found


def _batches(level: Sequence[str], workers: int) -> list[list[str]]:
    """A level cut into batches: at most BATCH KPIs, and enough batches for every worker."""
    size = max(1, min(BATCH, -(-len(level) // workers)))
    return [list(level[i : i + size]) for i in range(0, len(level), size)]


def merged_history(stored: list[Observation], fetched: Sequence[Observation]) -> list[Observation]:
    """Stored history with the fetched points, by time; a fetched point wins a tie."""
    if not fetched:
        return stored
    merged = {o.observed_at: o for o in stored}
    merged.update((o.observed_at, o) for o in fetched)
    return [merged[at] for at in sorted(merged)]


def _loggable(event: Event) -> dict[str, object]:
    keep = ("from", "to", "value", "review", "cadence")
    return {k: event.data[k] for k in keep if k in event.data}
