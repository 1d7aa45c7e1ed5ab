"""The outbox: the only place that retries.

Rows were written with the state change that caused them; this sends the due
ones, retries retryable failures with exponential backoff and jitter (honouring
a channel's Retry-After), and marks a row ``dead`` once its retry budget is
spent. A crash between sending and marking sent re-sends that one message on
restart: delivery is at-least-once.

Silenced or muted messages are marked ``suppressed``: recorded, never sent.
Each Slack channel is paced to one message a second (Slack's limit); review
reminders for one owner by email go out as one message.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from kpiwatch.clock import Clock
from kpiwatch.errors import DeliveryError, StoreError
from kpiwatch.model import DeliveryState, EventKind, OutboxMessage
from kpiwatch.notify.channels.base import BatchChannel, Channel
from kpiwatch.notify.notice import Notice
from kpiwatch.notify.notices import NoticeBuilder
from kpiwatch.store.repository import Store

log = structlog.get_logger("kpiwatch.outbox")

# Slack allows about one message a second per channel
PACING: Mapping[str, float] = {"slack": 1.0}


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
    def __init__(
        self,
        store: Store,
        channels: Mapping[str, Channel],
        clock: Clock,
        notices: NoticeBuilder,
        *,
        suppress: Callable[[Notice, datetime], str | None] = lambda notice, now: None,
        policy: RetryPolicy | None = None,
        rng: random.Random | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._channels = channels
        self._clock = clock
        self._notices = notices
        self._suppress = suppress
        self._policy = policy or RetryPolicy()
        self._rng = rng or random.Random()
        self._monotonic = monotonic
        self._last_sent: dict[tuple[str, str], float] = {}
        # (channel, result) with result sent | dead | suppressed | retried: for metrics
        self.on_result: Callable[[str, str], None] = lambda channel, result: None

    def deliver_due(self, limit: int = 100) -> int:
        """Send what is due now; returns how many messages were sent."""
        now = self._clock.now()
        sent = 0
        batches: dict[tuple[str, str], list[Notice]] = {}
        first_pending = self._first_pending()
        done: set[int] = set()  # handled in this pass (sent, suppressed or batched)
        held: set[tuple[str, str, str | None]] = set()  # conversations waiting this pass
        due = sorted(self._store.due_messages(now, limit=limit), key=lambda m: m.id)
        for message in due:  # in the order they were made: a conversation's head first
            key = _conversation(message)
            head = first_pending.get(key, message.id)
            if key in held or (head < message.id and head not in done):
                held.add(key)  # an earlier message to the same people about this KPI goes first
                continue
            notice = self._notices.build(message)
            reason = self._suppress(notice, now)
            if reason is not None:
                self._store.mark_suppressed(message.id, now, reason=reason)
                self.on_result(message.channel, "suppressed")
                log.info("notification suppressed", id=message.id, kpi=message.event.kpi_id,
                         reason=reason)  # fmt: skip
                done.add(message.id)
                continue
            channel = self._channels.get(message.channel)
            if isinstance(channel, BatchChannel) and message.event.kind is EventKind.REVIEW_DUE:
                batches.setdefault((message.channel, message.target), []).append(notice)
                done.add(message.id)
                continue
            if self._paced(message.channel, message.target):
                held.add(key)  # stays due; the next pass sends it
                continue
            if self._deliver(channel, [notice]):
                sent += 1
                done.add(message.id)
            else:
                held.add(key)
        for (name, _), notices in batches.items():
            sent += self._deliver(self._channels.get(name), notices)
        return sent

    def _first_pending(self) -> dict[tuple[str, str, str | None], int]:
        """The oldest pending message of each conversation (channel, target, KPI).

        Keeps a conversation in order while its head is being retried: an
        escalation never overtakes the status change it replies to in Slack.
        """
        first: dict[tuple[str, str, str | None], int] = {}
        for message in self._store.messages(states=[DeliveryState.PENDING], limit=10_000):
            key = _conversation(message)
            first[key] = min(first.get(key, message.id), message.id)
        return first

    def _paced(self, channel: str, target: str) -> bool:
        interval = PACING.get(channel)
        if interval is None:
            return False
        last = self._last_sent.get((channel, target))
        return last is not None and self._monotonic() - last < interval

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
        self._last_sent[(first.channel, first.target)] = self._monotonic()
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
