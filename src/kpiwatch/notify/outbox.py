"""The outbox: the only place that retries.

Rows were written with the state change that caused them; this sends the due
ones, retries retryable failures with exponential backoff and jitter (honouring
a channel's Retry-After), and marks a row ``dead`` once its retry budget is
spent. A crash between sending and marking sent re-sends that one message on
restart: delivery is at-least-once.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import structlog

from kpiwatch.clock import Clock
from kpiwatch.errors import DeliveryError, StoreError
from kpiwatch.model import OutboxMessage
from kpiwatch.notify.channels.base import Channel
from kpiwatch.store.repository import Store

log = structlog.get_logger("kpiwatch.outbox")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    first_delay: timedelta = timedelta(seconds=10)
    max_delay: timedelta = timedelta(minutes=30)
    budget: timedelta = timedelta(hours=24)  # after this a message is dead

    def next_delay(self, attempts: int, retry_after: float | None, rng: random.Random) -> timedelta:
        """Backoff for the ``attempts``-th failure: exponential, full jitter, floor Retry-After."""
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
        policy: RetryPolicy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._channels = channels
        self._clock = clock
        self._policy = policy or RetryPolicy()
        self._rng = rng or random.Random()

    def deliver_due(self, limit: int = 100) -> int:
        """Send what is due now; returns how many were sent."""
        sent = 0
        for message in self._store.due_messages(self._clock.now(), limit=limit):
            if self._deliver(message):
                sent += 1
        return sent

    def _deliver(self, message: OutboxMessage) -> bool:
        channel = self._channels.get(message.channel)
        now = self._clock.now()
        if channel is None:
            self._store.mark_dead(
                message.id, now, error=f"channel {message.channel!r} is not configured"
            )
            log.error(
                "notification dead",
                id=message.id,
                channel=message.channel,
                error="channel not configured",
            )
            return False
        try:
            channel.send(message)
        except DeliveryError as exc:
            self._failed(message, exc)
            return False
        except StoreError:
            raise
        except Exception as exc:  # a channel bug must not stop the outbox
            self._failed(message, DeliveryError(repr(exc), channel=message.channel, retryable=True))
            return False
        self._store.mark_sent(message.id, self._clock.now())
        return True

    def _failed(self, message: OutboxMessage, exc: DeliveryError) -> None:
        now = self._clock.now()
        attempts = message.attempts + 1
        delay = self._policy.next_delay(attempts, exc.retry_after, self._rng)
        out_of_budget = now + delay > message.created_at + self._policy.budget
        if not exc.retryable or out_of_budget:
            self._store.mark_dead(message.id, now, error=str(exc))
            log.error(
                "notification dead",
                id=message.id,
                channel=message.channel,
                attempts=attempts,
                error=str(exc),
            )
            return
        self._store.mark_retry(message.id, now, error=str(exc), next_attempt_at=now + delay)
        log.warning(
            "notification will be retried",
            id=message.id,
            channel=message.channel,
            attempts=attempts,
            retry_in=round(delay.total_seconds(), 1),
            error=str(exc),
        )
