"""The Channel protocol: deliver one message, or say whether a retry may help.

Channels never retry themselves; only the outbox does (as Alertmanager's notify stages).
"""

from __future__ import annotations

from typing import Protocol

from kpiwatch.model import OutboxMessage


class Channel(Protocol):
    name: str

    def send(self, message: OutboxMessage) -> None:
        """Deliver, or raise DeliveryError(retryable=...)."""
        ...
