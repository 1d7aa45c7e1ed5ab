"""The Channel protocol: deliver one notice, or say whether a retry may help.

Channels never retry themselves; only the outbox does (as Alertmanager's notify stages).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from kpiwatch.notify.notice import Notice


class Channel(Protocol):
    name: str

    def send(self, notice: Notice) -> None:
        """Deliver, or raise DeliveryError(retryable=...)."""
        ...


@runtime_checkable
class BatchChannel(Protocol):
    """A channel that can fold several notices for one target into one message."""

    name: str

    def send(self, notice: Notice) -> None: ...

    def send_batch(self, notices: Sequence[Notice]) -> None:
        """Deliver notices of one kind to one target as one message."""
        ...
