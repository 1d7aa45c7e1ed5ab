"""The composition root: the one place that builds concrete objects and wires them."""

from __future__ import annotations

import contextlib
import gc
import time as _time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from kpiwatch import __version__, heap
from kpiwatch.clock import Clock, SystemClock
from kpiwatch.config import secrets
from kpiwatch.config.loader import LoadedRules, load_rules
from kpiwatch.config.rules import Kpi, RuleSet
from kpiwatch.config.settings import Settings
from kpiwatch.errors import ConfigError, DeliveryError, RuleLoadError, StoreError
from kpiwatch.evaluation import ReminderPolicy
from kpiwatch.notify.channels.alertmanager import AlertmanagerChannel, removal
from kpiwatch.notify.channels.email import EmailChannel
from kpiwatch.notify.notices import NoticeBuilder
from kpiwatch.notify.outbox import Outbox
from kpiwatch.notify.suppression import Suppressor
from kpiwatch.runtime.channels import (
    build_channels,
    refresh_alerts,
    send_oncall_digest,
    verify_slack,
)
from kpiwatch.runtime.leases import Leases, replica_id
from kpiwatch.runtime.pruning import PRUNE_FIRST_AFTER, PRUNE_SECONDS, HourlyPrune
from kpiwatch.runtime.runner import CycleStats, Runner
from kpiwatch.runtime.scheduler import (
    HEARTBEAT_EXECUTOR,
    INTERVAL_ANCHOR,
    Scheduler,
    cron_slot,
    due_slot,
)
from kpiwatch.runtime.workspace import Workspace, build_workspace
from kpiwatch.store.leases import Claim, LeaseBook
from kpiwatch.store.lock import InstanceLock
from kpiwatch.store.repository import Store
from kpiwatch.web.context import WebContext
from kpiwatch.web.exporter import Metrics, build_registry
from kpiwatch.web.pushgateway import push_metrics

if TYPE_CHECKING:
    from kpiwatch.web.server import WebServer

log = structlog.get_logger("kpiwatch.app")

REVIEW_TICK_SECONDS = 60
OUTBOX_TICK_SECONDS = 0.25  # a due message waits at most this; pacing stays 1/s per channel
HEARTBEAT_SECONDS = 5
HEAP_TRIM_SECONDS = 60  # how often the C heap's free pages go back to the system
HEARTBEAT_MAX_AGE = 30.0  # /healthz and the systemd watchdog: the scheduler is stuck
LEASE_CHECK_SECONDS = 10  # how often a replica looks for work a dead replica left
KPI_LEASE = "kpi:"
# a replica claims a due slot's KPIs this many per worker at a time: small chunks spread
# the work of replicas firing together (each chunk then runs in batches of 100)
CLAIMED_PER_WORKER = 100
REVIEWS_LEASE = "job:reviews"
MUTE_ENDS_LEASE = "job:mute-ends"
REMINDERS_LEASE = "job:reminders"
FRESHNESS_LEASE = "job:freshness"
ONCALL_LEASE = "job:oncall-digest"
ALERTS_LEASE = "job:alertmanager-refresh"


@dataclass(frozen=True)
class OnceResult:
    stats: CycleStats
    reviews_due: int
    delivered: int
    undelivered: int
    push_error: str | None = None  # the Pushgateway push failed (when one is configured)
    reminders: int = 0  # reminders told of unacknowledged episodes


class App:
    """Everything the daemon needs, opened in order and closed in reverse."""

    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        secrets.register(settings)  # before anything can fail and print them
        self._stack = contextlib.ExitStack()
        url = settings.database_url.get_secret_value()
        self._stack.enter_context(InstanceLock(url))
        self.store = Store.open(url)
        self._stack.callback(self.store.close)
        self.leases = Leases(LeaseBook(self.store.engine), replica_id(),
                             timedelta(seconds=settings.lease_seconds))  # fmt: skip
        # the embedded SQLite store admits one daemon (the instance lock): a KPI's due
        # time needs no claim against replicas there, and the claim was 29 % of the
        # scheduled path's CPU (issue 15). The once-a-minute ticks keep theirs (their
        # done slots carry over restarts).
        self._exclusive = self.store.engine.dialect.name == "sqlite"
        loaded = load_rules(settings.rules_dir, file_roots=settings.file_roots,
                            cache_dir=settings.cache_dir)  # fmt: skip
        secrets.register(settings, loaded.rules)
        self.channels = build_channels(settings, self.store, self.clock.now)
        verify_slack(self.channels)
        self._channel_names = frozenset(self.channels)
        self.runner = Runner(
            self.store,
            self.clock,
            self._workspace(loaded),
            tz=settings.tz,
            review_time=settings.review_time,
            max_workers=settings.max_workers,
            reminders=ReminderPolicy(
                settings.reminder_first, settings.reminder_factor, settings.reminder_max
            ),
            blind_notice_after=settings.blind_notice_after,
            retention=settings.retention,
        )
        self._stack.callback(lambda: self.runner.workspace.close())
        self._stack.callback(self.runner.close)  # first: its pool's work uses the workspace
        try:
            self._check_source_roles()
        except ConfigError:
            self._stack.close()  # refused at start: release the store and the lock
            raise
        notices = NoticeBuilder(self.store, lambda: self.runner.workspace.rules, settings.base_url)
        self._suppressor = Suppressor(self.store, settings.tz)
        self.outbox = Outbox(self.store, self.channels, self.clock, notices,
                             suppress=self._suppressor.during,
                             holder=self.leases.holder, lease=self.leases.ttl)  # fmt: skip
        self._mute_checked = self.clock.now()
        self._scheduler: Scheduler | None = None
        self._web: WebServer | None = None
        self._heartbeat: float | None = None
        self.metrics = Metrics(self.channels)
        self._prune = HourlyPrune(self.store, self.leases, self.metrics, settings.retention,
                                  lambda: self.runner.workspace.rules, self.clock.now,
                                  lambda: self._tick_slot(PRUNE_SECONDS))  # fmt: skip
        self.registry = build_registry(
            self.store, lambda: self.runner.workspace.rules, self.metrics,
            clock=self.clock, tz=settings.tz,
        )  # fmt: skip
        self.runner.on_evaluated = self.metrics.evaluated
        self.runner.on_fetched = self.metrics.fetched
        self.runner.on_failed = self.metrics.evaluation_failed
        self.outbox.on_result = self.metrics.delivered
        self.runner.on_reminded = self.metrics.reminded
        self._forget_removed_kpis()
        self._frozen = False  # see keep_for_good
        log.info(
            "rules loaded",
            kpis=len(loaded.rules.kpis),
            files=len(loaded.files),
            database=self.store.url,
            version=__version__,
        )

    def keep_for_good(self) -> None:
        """Hide what exists now (rules, workspace, wiring) from the cyclic collector.

        What the App holds after start lives as long as the process (the rules until a
        reload), yet every full pass of the collector would walk it again (10,000 KPIs
        leave some 43,000 objects it tracks, ~55 ms a pass on a 2-core machine, for
        nothing). ``gc.freeze()`` moves everything alive to a generation the collector
        never walks; reference counting still frees it. The process that
        runs this App calls it once started (``run``, ``run --once``), not ``load_rules``
        nor this constructor: a process that drops what it loaded or built (``check``,
        the tests, which build many Apps) would keep its garbage cycles for good. A
        reload then unfreezes, collects once and freezes the new rules.
        """
        gc.freeze()
        self._frozen = True
        heap.trim()  # what the start built and dropped (migrations, wiring) goes back

    # ------------------------------------------------------------ wiring

    def _workspace(self, loaded: LoadedRules) -> Workspace:
        return build_workspace(loaded, self.settings, self.store.latest, self._channel_names,
                               latest_of=self.store.latest_of)  # fmt: skip

    def _check_source_roles(self) -> None:
        """Refuse SQL sources whose role could act on the database server (ConfigError)."""
        rules = self.runner.workspace.rules
        if not any(s.type == "sql" for s in rules.sources.values()):
            return  # the SQL adapter (and its parser) stays unimported, as in build_sources
        from kpiwatch.sources.sql import check_roles

        for problem in check_roles(self.runner.workspace.sources):
            log.warning("source not reachable at start; its KPIs fail until it answers",
                        source=problem.source, error=problem.reason)  # fmt: skip

    def kpi(self, kpi_id: str) -> Kpi | None:
        """The KPI as the running rules define it now."""
        return self.runner.workspace.rules.by_id.get(kpi_id)

    def _forget_removed_kpis(self, previous: RuleSet | None = None) -> None:
        """Forget the states of KPIs no longer in the rules. Those ``previous`` (the
        rules before a reload) had firing in Alertmanager get their alert resolved; at
        start the old rules are unknown, and such alerts end when their lease does."""
        removed = self.store.state_ids() - set(self.runner.workspace.rules.by_id)
        now = self.clock.now()
        for kpi_id, state in self.store.states_of(removed).items() if removed else ():
            old = previous.by_id.get(kpi_id) if previous is not None else None
            resolve = removal(previous, old, state, now) if previous and old else None
            if resolve is not None and resolve[1].channel in self._channel_names:
                event, delivery = resolve
                self.store.delete_state(kpi_id, [event], {event.key: [delivery]})
            else:
                self.store.delete_state(kpi_id)
            log.info("KPI removed from rules: state forgotten, history kept for the retention",
                     kpi=kpi_id)  # fmt: skip

    # ------------------------------------------------------------ daemon

    def web_context(self) -> WebContext:
        return WebContext(
            store=self.store,
            rules=lambda: self.runner.workspace.rules,
            settings=self.settings,
            clock=self.clock,
            runner=self.runner,
            registry=self.registry,
            heartbeat=lambda: self._heartbeat,
            heartbeat_max_age=HEARTBEAT_MAX_AGE,
        )

    def heartbeat_fresh(self) -> bool:
        beat = self._heartbeat
        return beat is not None and _time.monotonic() - beat <= HEARTBEAT_MAX_AGE

    @property
    def http_url(self) -> str | None:
        return self._web.url if self._web is not None else None

    def start(self) -> None:
        """Schedule every KPI, reviews and outbox delivery; start the scheduler and HTTP."""
        # imported here: `run --once` and the CLI serve nothing, and FastAPI, Starlette
        # and uvicorn are a third of the CLI's import time (issue 15)
        from kpiwatch.web.app import create_app
        from kpiwatch.web.server import WebServer

        # bind first: a taken port fails the start before any work is done
        web = WebServer(create_app(self.web_context()), self.settings.http_host,
                        self.settings.http_port)  # fmt: skip
        scheduler = Scheduler(
            max_workers=self.settings.max_workers,
            misfire_grace=self.settings.misfire_grace,
            tz=self.settings.tz,
            on_skipped=self.metrics.schedule.skipped,
        )
        now = self.clock.now()
        scheduler.sync_kpis(self.runner.workspace.rules, self.store.states(), now, self._run_kpis)
        scheduler.every("reviews", REVIEW_TICK_SECONDS, self._tick_reviews, now=now)
        scheduler.every("outbox", OUTBOX_TICK_SECONDS, self._deliver, now=now)
        scheduler.every("mute-ends", REVIEW_TICK_SECONDS, self._tick_mute_ends)
        scheduler.every("reminders", REVIEW_TICK_SECONDS, self._tick_reminders, now=now)
        scheduler.every("freshness", REVIEW_TICK_SECONDS, self._tick_freshness, now=now)
        scheduler.cron("oncall-digest", self.settings.oncall_cron, self._send_oncall_digest)
        scheduler.every("leases", LEASE_CHECK_SECONDS, self._take_over_abandoned)
        if not self._exclusive:  # long batches keep their claims; a dead replica's expire
            scheduler.every("lease-renewal", self.leases.ttl.total_seconds() / 3,
                            self._renew_claims, executor=HEARTBEAT_EXECUTOR)  # fmt: skip
        alertmanager = self._alertmanager()
        if alertmanager is not None:
            scheduler.every("alertmanager-refresh", alertmanager.refresh.total_seconds(),
                            self._refresh_alerts, now=now)  # fmt: skip
        if self.settings.retention is not None:
            scheduler.every("prune", PRUNE_SECONDS, self._prune, now=now + PRUNE_FIRST_AFTER)
        scheduler.every("heartbeat", HEARTBEAT_SECONDS, self._beat, now=now,
                        executor=HEARTBEAT_EXECUTOR)  # fmt: skip
        # glibc keeps the pages the batches freed: at 10,000 KPIs giving them back once
        # a minute holds RSS ~12 MiB lower, for 5 to 30 ms (bench/bench_memory.py --trim)
        scheduler.every("heap-trim", HEAP_TRIM_SECONDS, heap.trim, executor=HEARTBEAT_EXECUTOR)
        scheduler.start()
        self._scheduler = scheduler
        try:
            web.start()
        except Exception:
            scheduler.shutdown(wait=False)
            self._scheduler = None
            raise
        self._web = web
        log.info(
            "daemon started",
            kpis=len(self.runner.workspace.rules.kpis),
            timezone=self.settings.timezone,
        )

    def stop(self) -> None:
        if self._web is not None:
            self._web.stop()
            self._web = None
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
        self._deliver()  # what the last evaluations caused, if the channels answer
        self.close()

    def reload(self) -> bool:
        """Load the rules again; invalid rules are refused and the running ones stay."""
        try:
            loaded = load_rules(self.settings.rules_dir, file_roots=self.settings.file_roots,
                                cache_dir=self.settings.cache_dir)  # fmt: skip
        except RuleLoadError as exc:
            log.error(
                "rules not reloaded: fix these errors; the running rules stay",
                errors=[str(p) for p in exc.problems],
            )
            return False
        secrets.register(self.settings, loaded.rules)
        old = self.runner.swap(self._workspace(loaded))
        old.close()
        self._forget_removed_kpis(old.rules)
        if self._frozen:  # let the old rules and workspace go, keep the new ones for good
            del old
            gc.unfreeze()
            gc.collect()  # their cycles (connection pools, say) are freed only by it
            gc.freeze()
            heap.trim()
        if self._scheduler is not None:
            self._scheduler.sync_kpis(
                loaded.rules, self.store.states(), self.clock.now(), self._run_kpis
            )
        log.info("rules reloaded", kpis=len(loaded.rules.kpis), files=len(loaded.files))
        return True

    def rules_signature(self) -> tuple[tuple[str, int, int], ...]:
        """Cheap change detection: names, sizes and mtimes of the rule files."""
        root = Path(self.settings.rules_dir)
        files = sorted([*root.rglob("*.yaml"), *root.rglob("*.yml")]) if root.is_dir() else []
        signature = []
        for path in files:
            with contextlib.suppress(OSError):
                stat = path.stat()
                signature.append((str(path), stat.st_size, stat.st_mtime_ns))
        return tuple(signature)

    def next_run(self, kpi_id: str) -> datetime | None:
        return self._scheduler.next_run(kpi_id) if self._scheduler else None

    # ------------------------------------------------------------ jobs (never raise)

    def _beat(self) -> None:
        self._heartbeat = _time.monotonic()
        self.metrics.schedule.report(self.clock.now())  # a line a minute while falling behind

    def _run_kpis(self, kpi_ids: Sequence[str], slot: datetime | None = None) -> None:
        """KPIs that fell due together (one source, one schedule), evaluated as batches
        through the batched path; with replicas, each batch is claimed for its due time
        first, and a replica evaluates only what it claimed."""
        try:
            rules = self.runner.workspace.rules
            kpis = [kpi for kpi_id in kpi_ids if (kpi := rules.by_id.get(kpi_id)) is not None]
            if not kpis:
                return
            if slot is None:
                now = self.clock.now()
                slot = due_slot(kpis[0], now, self.settings.tz)  # one schedule: one slot
                self.metrics.schedule.started(now - slot)
            if self._exclusive:
                self.runner.evaluate_due([kpi.id for kpi in kpis])
                return
            # claims in chunks: replicas firing together share a slot's work, a few
            # hundred KPIs at a time
            size = CLAIMED_PER_WORKER * self.settings.max_workers
            for start in range(0, len(kpis), size):
                self._claim_and_run(kpis[start : start + size], slot)
        except Exception:  # one failing batch never stops the others
            log.exception("evaluation failed", kpis=len(kpi_ids))

    def _claim_and_run(self, kpis: Sequence[Kpi], slot: datetime) -> None:
        """Claim the free ones of ``kpis`` for ``slot``, evaluate those, and finish their
        claims (a KPI whose evaluation failed is let go, not finished)."""
        names = [KPI_LEASE + kpi.id for kpi in kpis]
        # a lease (KPIWATCH_LEASE_SECONDS), renewed every third of it while the batch
        # runs: a dead replica's claims expire, and are taken over, within one lease
        claims = self.leases.claim_many(names, slot=slot)
        if not claims:
            log.debug("evaluations skipped: done or claimed elsewhere", kpis=len(kpis),
                      slot=slot.isoformat())  # fmt: skip
            return
        claims = self._not_yet_evaluated(claims, slot)
        if not claims:
            return
        with self.leases.renewing(claims):
            try:
                stats = self.runner.evaluate_due([c.name[len(KPI_LEASE) :] for c in claims])
            except BaseException:
                self.leases.settle([], claims)
                raise
        failed = {KPI_LEASE + kpi_id for kpi_id in stats.failed_ids}
        self.leases.settle([c for c in claims if c.name not in failed],
                           [c for c in claims if c.name in failed])  # fmt: skip

    def _not_yet_evaluated(self, claims: Sequence[Claim], slot: datetime) -> list[Claim]:
        """``claims`` but those whose KPI was evaluated at or after ``slot`` already: a
        replica killed while saving its chunk saved some and finished none. Those are
        finished here, not evaluated a second time for the same due time."""
        try:
            done = self.store.evaluated_since([c.name[len(KPI_LEASE) :] for c in claims], slot)
        except StoreError as exc:  # the evaluation would fail the same way: let them go
            log.warning("cannot read evaluation times", error=str(exc))
            self.leases.settle([], claims)
            return []
        if not done:
            return list(claims)
        evaluated = [c for c in claims if c.name[len(KPI_LEASE) :] in done]
        self.leases.settle(evaluated, [])
        log.info("due evaluations already saved, never marked done (a replica died?); "
                 "marked done now", kpis=len(evaluated), slot=slot.isoformat())  # fmt: skip
        return [c for c in claims if c.name[len(KPI_LEASE) :] not in done]

    def _renew_claims(self) -> None:
        try:
            self.leases.renew()
        except Exception:
            log.exception("renewing claims failed")

    def _tick_reviews(self) -> None:
        try:
            with self.leases.hold(REVIEWS_LEASE, slot=self._tick_slot()) as claim:
                if claim is not None:
                    self.runner.tick_reviews()
        except Exception:
            log.exception("review tick failed")

    def _tick_reminders(self) -> None:
        """Remind unacknowledged episodes: once a minute, on the one replica that claims it."""
        try:
            with self.leases.hold(REMINDERS_LEASE, slot=self._tick_slot()) as claim:
                if claim is not None:
                    self.runner.tick_reminders()
        except Exception:
            log.exception("reminder tick failed")

    def _tick_mute_ends(self) -> None:
        try:
            now = self.clock.now()
            # the slot is the check's own time: each check covers (previous check, now],
            # whichever replica made the previous one, so no window end is told twice
            with self.leases.hold(MUTE_ENDS_LEASE, slot=now) as claim:
                if claim is None:
                    return
                since = claim.previous_done or self._mute_checked
                self._mute_checked = now
                self.runner.tick_mute_ends(since)
        except Exception:
            log.exception("mute window check failed")

    def _tick_freshness(self) -> None:
        """Run the sources' due ``freshness`` checks (each at its own ``every``), once a
        minute on the one replica that claims it."""
        try:
            with self.leases.hold(FRESHNESS_LEASE, slot=self._tick_slot()) as claim:
                if claim is not None:
                    self.runner.tick_freshness()
        except Exception:
            log.exception("freshness tick failed")

    def _tick_slot(self, seconds: int = REVIEW_TICK_SECONDS) -> datetime:
        """This minute (or ``seconds`` period): review and mute ticks run once a minute,
        the Alertmanager refresh once a refresh interval, each on one replica."""
        elapsed = int((self.clock.now() - INTERVAL_ANCHOR).total_seconds())
        return INTERVAL_ANCHOR + timedelta(seconds=elapsed - elapsed % max(1, seconds))

    def _alertmanager(self) -> AlertmanagerChannel | None:
        channel = self.channels.get("alertmanager")
        return channel if isinstance(channel, AlertmanagerChannel) else None

    def refresh_alerts(self) -> int:
        """Re-post the firing alerts now (the refresh job's work, without its lease)."""
        channel = self._alertmanager()
        if channel is None:
            return 0
        return refresh_alerts(self.store, self.runner.workspace.rules, channel,
                              self.settings.base_url, self.clock.now(),
                              held_back=self._suppressor.for_kpi)  # fmt: skip

    def _refresh_alerts(self) -> None:
        """Keep firing alerts alive in Alertmanager: one replica per refresh interval."""
        try:
            channel = self._alertmanager()
            if channel is None:
                return
            slot = self._tick_slot(int(channel.refresh.total_seconds()))
            with self.leases.hold(ALERTS_LEASE, slot=slot) as claim:
                if claim is not None:
                    posted = self.refresh_alerts()
                    log.debug("Alertmanager alerts refreshed", alerts=posted)
        except DeliveryError as exc:  # the lease runs for 4 refreshes: the next one may pass
            log.warning("Alertmanager refresh failed; the next one posts again", error=str(exc))
        except Exception:
            log.exception("Alertmanager refresh failed")

    def _send_oncall_digest(self, slot: datetime | None = None) -> None:
        try:
            now = self.clock.now()
            slot = slot or cron_slot(self.settings.oncall_cron, now, self.settings.tz)
            with self.leases.hold(ONCALL_LEASE, slot=slot) as claim:
                if claim is None:
                    return
                email = self.channels.get("email")
                done = send_oncall_digest(
                    self.store, self.runner.workspace.rules, self.settings,
                    email if isinstance(email, EmailChannel) else None, now,
                )  # fmt: skip
                log.info("on-call digest", result=done)
        except Exception as exc:  # the mark stays: the next run covers this period too
            log.error("on-call digest failed; the next one covers this period", error=str(exc))

    def _take_over_abandoned(self) -> None:
        """Finish the due work a replica claimed and never finished (it died)."""
        try:
            rules = self.runner.workspace.rules
            now = self.clock.now()
            left: dict[datetime, list[str]] = {}
            for name, slot in self.leases.abandoned(KPI_LEASE):
                kpi = rules.by_id.get(name[len(KPI_LEASE) :])
                if kpi is None or slot is None:
                    continue
                # its next due time may have come meanwhile (the dead claim kept the other
                # replicas off it): one evaluation now does both
                left.setdefault(max(slot, due_slot(kpi, now, self.settings.tz)), []).append(kpi.id)
            for slot, kpi_ids in left.items():
                log.info("taking over abandoned evaluations", kpis=len(kpi_ids),
                         first=kpi_ids[0], slot=slot.isoformat())  # fmt: skip
                self._run_kpis(kpi_ids, slot)
            for _, slot in self.leases.abandoned(ONCALL_LEASE):
                self._send_oncall_digest(slot)
        except Exception:
            log.exception("looking for abandoned work failed")

    def _deliver(self) -> None:
        try:
            while self.outbox.deliver_due() >= 100:
                pass
        except Exception:
            log.exception("outbox delivery failed; will retry")

    # ------------------------------------------------------------ run --once

    def run_once(self) -> OnceResult:
        """Evaluate every KPI once, tick reviews, deliver within a bounded time."""
        self.runner.tick_freshness()  # first: a stale source blinds the KPIs it feeds
        stats = self.runner.evaluate_all()
        reviews = self.runner.tick_reviews()
        reminders = self.runner.tick_reminders()
        delivered = 0
        deadline = _time.monotonic() + self.settings.delivery_timeout
        while _time.monotonic() < deadline:
            sent = self.outbox.deliver_due()
            delivered += sent
            if sent == 0:
                # still due means paced or queued behind its conversation: wait a moment;
                # failures are no longer due (their retry is later), so this ends
                if not self.store.due_messages(self.clock.now(), limit=1):
                    break
                _time.sleep(0.25)
        undelivered = sum(self.store.pending_counts().values())
        self._refresh_once()
        return OnceResult(stats, reviews, delivered, undelivered, self._push(), reminders)

    def _refresh_once(self) -> None:
        """run --once: extend still-firing alerts until the next run (one refresh)."""
        try:
            self.refresh_alerts()
        except DeliveryError as exc:
            log.error("Alertmanager refresh failed", error=str(exc))

    def _push(self) -> str | None:
        """Push this run's metrics to the Pushgateway, if one is configured."""
        url = self.settings.pushgateway_url
        if not url:
            return None
        try:
            push_metrics(url, self.registry, instance=self.settings.pushgateway_instance)
        except Exception as exc:
            log.error("push to the Pushgateway failed", error=str(exc))
            return str(exc)
        log.info("metrics pushed to the Pushgateway", instance=self.settings.pushgateway_instance)
        return None

    def close(self) -> None:
        self._stack.close()
