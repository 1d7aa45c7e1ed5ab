"""Whether a notice is held back: a matching silence, or a recurring mute window."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from kpiwatch.config.rules import Kpi
from kpiwatch.model import Silence
from kpiwatch.notify.notice import Notice
from kpiwatch.notify.silencing import active_mute, matching_silence
from kpiwatch.store.repository import Store


class Suppressor:
    def __init__(self, store: Store, tz: ZoneInfo) -> None:
        self._store = store
        self._tz = tz

    def during(self, now: datetime) -> Callable[[Notice], str | None]:
        """Why each notice of one outbox pass at ``now`` is not sent, or None to send it.

        The silences active at ``now`` are read once for the whole pass (at its first
        notice about a KPI); a silence added meanwhile applies from the next pass. A
        read per message was ~0.4 s of a ``run --once`` sending a few hundred notices
        (issue 15). Safe to call from the pass's sending threads.
        """
        lock = threading.Lock()
        active: list[Silence] | None = None

        def reason(notice: Notice) -> str | None:
            nonlocal active
            kpi = notice.kpi
            if kpi is None:  # source and delivery problems are never silenced
                return None
            with lock:
                if active is None:
                    active = self._store.silences(active_at=now)
            return self._held_back(kpi, active, now)

        return reason

    def for_kpi(self, kpi: Kpi, now: datetime) -> str | None:
        """Why news of ``kpi`` is held back now (a silence or a mute window), or None."""
        return self._held_back(kpi, self._store.silences(active_at=now), now)

    def _held_back(self, kpi: Kpi, silences: Sequence[Silence], now: datetime) -> str | None:
        silence = matching_silence(kpi, silences, now)
        if silence is not None:
            return (f"silenced by #{silence.id} ({silence.matcher.value} {silence.value}) "
                    f"until {silence.ends_at.isoformat()}: {silence.comment}")  # fmt: skip
        mute = active_mute(kpi, now, self._tz)
        if mute is not None:
            return f"muted by the rules ({mute.cron} for {mute.for_}): {mute.comment or ''}".rstrip(
                ": "
            )
        return None
