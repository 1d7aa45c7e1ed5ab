"""The outbox: the only place that retries.

Rows were written with the state change that caused them; this sends the due
ones, retries retryable failures with exponential backoff and jitter (honouring
a channel's Retry-After), and marks a row ``dead`` once its retry budget is
spent. A crash between sending and marking sent re-sends that one message on
restart: delivery is at-least-once.

Silenced or muted messages are marked ``suppressed``: recorded, never sent.
Each Slack channel is paced to one message a second (Slack's limit); review
reminders for one owner by email go out as one message.

Replicas sharing a database share the work through row claims (leases on the
database's clock). Pacing is per replica: two replicas may each send a channel
one message a second.
"""

from __future__ import annotations

import os
import random
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import uuid4

import structlog
from sqlalchemy.pool import StaticPool

from kpiwatch.clock import Clock
from kpiwatch.errors import DeliveryError, StoreError
from kpiwatch.model import EventKind, OutboxMessage
from kpiwatch.notify.channels.base import BatchChannel, Channel
from kpiwatch.notify.notice import Notice
from kpiwatch.notify.notices import NoticeBuilder
from kpiwatch.store.repository import Store

log = structlog.get_logger("kpiwatch.outbox")

# Slack allows about one message a second per channel
PACING: Mapping[str, float] = {"slack": 1.0}
# a pass that starts this much before a recipient's slot may still send: ticks a second
# apart jitter, and a tick a few ms early must not cost the channel a whole second
PACING_EARLY = 0.1
# claimed per paced recipient and pass: one is sent, suppressed ones before it pass through
_PACED_CLAIMS: Mapping[str, int] = dict.fromkeys(PACING, 2)
# comfortably more than a channel's send timeout (Slack, SMTP and webhooks: 10 s)
DEFAULT_LEASE = timedelta(seconds=60)
DEFAULT_SENDERS = 4  # recipients worked on side by side


def _send_all(notice: Notice) -> str | None:
    """No notice held back (an Outbox without a suppressor)."""
    return None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    first_delay: timedelta = timedelta(seconds=10)
    max_delay: timedelta = timedelta(minutes=30)
    budget: timedelta = timedelta(hours=24)  # after this a message is dead

    def next_delay(self, attempts: int, retry_after: float | None, rng: random.Random) -> timedelta:
        """Backoff for the ``attempts``-th failure: exponential, jitter, floor Retry-After."""
        ceiling = min(
            self.max_delay.total_seconds(),
            self.first_delay.total_seconds() * 2 ** min(attempts, 30),
        )
        delay = rng.uniform(ceiling / 2, ceiling)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return timedelta(seconds=delay)


class Outbox:
    """Delivers the outbox; several replicas may each run one on a shared database.

    Each pass claims what it works on (:meth:`Store.claim_due_messages`): a row
    is delivered by one replica at a time, a conversation in order, and a
    replica killed mid-pass leaves its claims to expire after ``lease``, when
    another replica takes them over (at-least-once: a message sent just before
    the kill is sent again). ``lease`` must comfortably exceed a channel's send
    timeout, or a slow send could be taken over and sent twice.

    Recipients are worked on side by side by up to ``senders`` threads, each
    (channel, target) by one thread in order: a slow Slack channel does not hold
    up the others.
    """

    def __init__(
        self,
        store: Store,
        channels: Mapping[str, Channel],
        clock: Clock,
        notices: NoticeBuilder,
        *,
        # a pass at ``now`` -> why each of its notices is held back (None: send it)
        suppress: Callable[[datetime], Callable[[Notice], str | None]] = lambda now: _send_all,
        policy: RetryPolicy | None = None,
        rng: random.Random | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        holder: str | None = None,
        lease: timedelta = DEFAULT_LEASE,
        senders: int = DEFAULT_SENDERS,
    ) -> None:
        self._store = store
        self._channels = channels
        self._clock = clock
        self._notices = notices
        self._suppress = suppress
        self._policy = policy or RetryPolicy()
        self._rng = rng or random.Random()
        self._monotonic = monotonic
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid4().hex[:8]}"
        self._lease = lease
        # one in-memory SQLite connection is shared by every thread: no parallel transactions
        self._senders = 1 if isinstance(store.engine.pool, StaticPool) else max(1, senders)
        # (channel, target) -> the earliest monotonic time of its next message (pacing)
        self._next_slot: dict[tuple[str, str], float] = {}
        # (channel, result) with result sent | dead | suppressed | retried: for metrics
        self.on_result: Callable[[str, str], None] = lambda channel, result: None

    def deliver_due(self, limit: int = 100) -> int:
        """Send what is due now; returns how many messages were sent."""
        now = self._clock.now()
        started = self._monotonic()
        # a slot already past paces nothing and stamps as no slot would (max(slot, started)):
        # forget it, or this dict keeps every (channel, target) ever sent to (issue 15)
        if any(slot <= started for slot in self._next_slot.values()):
            self._next_slot = {key: s for key, s in self._next_slot.items() if s > started}
        paced = [key for key in self._next_slot if self._paced(*key, started)]
        claimed = self._store.claim_due_messages(
            self.holder, now=now, lease=self._lease, limit=limit,
            per_target=_PACED_CLAIMS, skip=paced,
        )  # fmt: skip
        if not claimed:
            return 0
        lanes: dict[tuple[str, str], list[OutboxMessage]] = {}
        for message in claimed:  # oldest first: a conversation's head first
            lanes.setdefault((message.channel, message.target), []).append(message)
        finished: set[int] = set()  # sent, retried, dead, suppressed: their claims ended
        try:
            # one bulk read for the notices this pass will likely need: each paced
            # recipient's first message (paced ones were skipped), all of the others';
            # a notice needed beyond those (after a suppressed one) is built on its own
            wanted = [m for lane in lanes.values()
                      for m in (lane[:1] if lane[0].channel in PACING else lane)]  # fmt: skip
            built = dict(zip((m.id for m in wanted), self._notices.build_many(wanted),
                             strict=True))  # fmt: skip
            suppress = self._suppress(now)  # silences read once for the pass
            if self._senders == 1 or len(lanes) == 1:
                return sum(self._lane(lane, built, now, suppress, started, finished)
                           for lane in lanes.values())  # fmt: skip
            workers = min(self._senders, len(lanes))
            with ThreadPoolExecutor(workers, thread_name_prefix="outbox") as pool:
                futures = [pool.submit(self._lane, lane, built, now, suppress, started, finished)
                           for lane in lanes.values()]  # fmt: skip
                wait(futures)
            return sum(future.result() for future in futures)  # re-raises a lane's StoreError
        finally:
            self._release([m.id for m in claimed if m.id not in finished])

    def _lane(
        self,
        messages: Sequence[OutboxMessage],
        built: Mapping[int, Notice],
        now: datetime,
        suppress: Callable[[Notice], str | None],
        started: float,
        finished: set[int],
    ) -> int:
        """One recipient's claimed messages, in order; returns how many were sent."""
        sent = 0
        held: set[tuple[str, str, str | None]] = set()  # conversations waiting this pass
        batch: list[Notice] = []
        channel = self._channels.get(messages[0].channel)
        # start no send that could outlive the claim: the rest goes to the next pass
        budget = started + self._lease.total_seconds() / 2
        for message in messages:
            key = _conversation(message)
            if sent and self._monotonic() > budget:
                break
            if key in held:
                continue  # an earlier message to the same people about this KPI goes first
            if self._paced(message.channel, message.target, started):
                break  # the rest wait for the next pass; checked before building a notice
            notice = built.get(message.id) or self._notices.build(message)
            reason = suppress(notice)
            if reason is not None:
                self._store.mark_suppressed(message.id, now, reason=reason)
                finished.add(message.id)
                self.on_result(message.channel, "suppressed")
                log.info("notification suppressed", id=message.id, kpi=message.event.kpi_id,
                         reason=reason)  # fmt: skip
                continue
            if isinstance(channel, BatchChannel) and message.event.kind is EventKind.REVIEW_DUE:
                batch.append(notice)
                continue
            delivered = self._deliver(channel, [notice])
            finished.add(message.id)  # marked sent, retry or dead either way
            if delivered:
                sent += 1
                self._stamp(message.channel, message.target, started)
            else:
                held.add(key)
        if batch:
            sent += self._deliver(channel, batch)
            finished.update(notice.message.id for notice in batch)
        return sent

    def _release(self, message_ids: Sequence[int]) -> None:
        """Hand back what this pass claimed but did not finish, for the next pass (or replica)."""
        if not message_ids:
            return
        try:
            self._store.release_claims(self.holder, message_ids)
        except StoreError as exc:  # the claims expire by themselves after the lease
            log.warning("outbox claims not released", count=len(message_ids), error=str(exc))

    def _paced(self, channel: str, target: str, at: float) -> bool:
        slot = self._next_slot.get((channel, target))
        return slot is not None and at < slot - PACING_EARLY

    def _stamp(self, channel: str, target: str, started: float) -> None:
        interval = PACING.get(channel)
        if interval is not None:
            # from the pass's start, not the send: passes a second apart send a second apart
            # (with sends at their slot times on average: never faster than the pacing)
            slot = self._next_slot.get((channel, target), started)
            self._next_slot[(channel, target)] = max(slot, started) + interval

    def _deliver(self, channel: Channel | None, notices: Sequence[Notice]) -> int:
        first = notices[0].message
        if channel is None:
            for notice in notices:
                self._store.mark_dead(
                    notice.message.id,
                    self._clock.now(),
                    error=f"channel {first.channel!r} is not configured",
                )
                self.on_result(first.channel, "dead")
            log.error("notification dead", channel=first.channel, error="channel not configured")
            return 0
        try:
            if len(notices) > 1 and isinstance(channel, BatchChannel):
                channel.send_batch(notices)
            else:
                channel.send(notices[0])
        except DeliveryError as exc:
            for notice in notices:
                self._failed(notice, exc)
            return 0
        except StoreError:
            raise
        except Exception as exc:  # a channel bug must not stop the outbox
            error = DeliveryError(repr(exc), channel=first.channel, retryable=True)
            for notice in notices:
                self._failed(notice, error)
            return 0
        now = self._clock.now()
        for notice in notices:
            self._store.mark_sent(notice.message.id, now)
            self.on_result(first.channel, "sent")
        return len(notices)

    def _failed(self, notice: Notice, exc: DeliveryError) -> None:
        message = notice.message
        now = self._clock.now()
        attempts = message.attempts + 1
        delay = self._policy.next_delay(attempts, exc.retry_after, self._rng)
        out_of_budget = now + delay > message.created_at + self._policy.budget
        if not exc.retryable or out_of_budget:
            self._store.mark_dead(message.id, now, error=str(exc))
            self.on_result(message.channel, "dead")
            log.error("notification dead", id=message.id, channel=message.channel,
                      target=message.target, attempts=attempts, error=str(exc))  # fmt: skip
            return
        self._store.mark_retry(message.id, now, error=str(exc), next_attempt_at=now + delay)
        self.on_result(message.channel, "retried")
        log.warning("notification will be retried", id=message.id, channel=message.channel,
                    attempts=attempts, retry_in=round(delay.total_seconds(), 1),
                    error=str(exc))  # fmt: skip


def _conversation(message: OutboxMessage) -> tuple[str, str, str | None]:
    return (message.channel, message.target, message.event.kpi_id)
