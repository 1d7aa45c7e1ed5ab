"""Whether a notice is held back: a matching silence, or a recurring mute window."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from kpiwatch.config.rules import Kpi
from kpiwatch.notify.notice import Notice
from kpiwatch.notify.silencing import active_mute, matching_silence
from kpiwatch.store.repository import Store


class Suppressor:
    def __init__(self, store: Store, tz: ZoneInfo) -> None:
        self._store = store
        self._tz = tz

    def reason(self, notice: Notice, now: datetime) -> str | None:
        """Why this notice is not sent now, or None to send it."""
        kpi = notice.kpi
        if kpi is None:  # source and delivery problems are never silenced
            return None
        return self.for_kpi(kpi, now)

    def for_kpi(self, kpi: Kpi, now: datetime) -> str | None:
        """Why news of ``kpi`` is held back now (a silence or a mute window), or None."""
        silence = matching_silence(kpi, self._store.silences(active_at=now), now)
        if silence is not None:
            return (f"silenced by #{silence.id} ({silence.matcher.value} {silence.value}) "
                    f"until {silence.ends_at.isoformat()}: {silence.comment}")  # fmt: skip
        mute = active_mute(kpi, now, self._tz)
        if mute is not None:
            return f"muted by the rules ({mute.cron} for {mute.for_}): {mute.comment or ''}".rstrip(
                ": "
            )
        return None
