"""Which silence or recurring mute window holds a KPI's notifications back (pure, no I/O).

Silences are one-off and stored (``kpiwatch silence add``); mutes are recurring
windows in the rules (``mute: [{cron: "0 0 24 12 *", for: 9d}]``).

How a mute window is computed: a window opens at each fire time of its cron,
in the configured timezone, and lasts ``for`` of *wall-clock* time (Python's
aware arithmetic in that zone), so ``cron: "0 0 * * SUN", for: 1d`` ends at
Monday 00:00 local even on the Sunday DST starts or ends. APScheduler's
CronTrigger only looks forward, so to find the windows that cover ``now`` we
search forward from ``now - for`` (minus an hour of slack for a DST shift)
for the first fire time whose window has not ended yet; the mute is active
when that fire time is not after ``now``. That costs a few trigger steps,
however often the cron fires.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from kpiwatch.config.rules import Kpi, Mute
from kpiwatch.model import MatcherKind, Silence

# A DST change moves wall-clock arithmetic by at most this much.
_DST_SLACK = timedelta(hours=1)
# Overlapping windows (a cron firing more often than ``for``) chain into one long
# mute; stop following them after this many steps and report the end reached.
_MAX_CHAIN = 1000
_STEP = timedelta(microseconds=1)  # "strictly after": the trigger rounds up to the next second


def matching_silence(kpi: Kpi, silences: Sequence[Silence], now: datetime) -> Silence | None:
    """The active silence covering ``kpi`` (by id, team, or label ``key=value``), if any.

    When several match, the one lasting longest wins: its end is when
    notifications really resume.
    """
    found: Silence | None = None
    for silence in silences:
        if not silence.active(now) or not _matches(kpi, silence):
            continue
        if found is None or _effective_end(silence) > _effective_end(found):
            found = silence
    return found


def active_mute(kpi: Kpi, now: datetime, tz: ZoneInfo) -> Mute | None:
    """The first of the KPI's recurring ``mute`` windows open at ``now``, if any."""
    for mute in kpi.mute:
        start = _covering_fire(mute, now, tz)
        if start <= now:
            return mute
    return None


def mute_ends(kpi: Kpi, now: datetime, tz: ZoneInfo) -> datetime | None:
    """When the mute in force at ``now`` ends (UTC); None when no window is open.

    Windows that overlap or touch, of one mute or of several, count as one:
    the result is when notifications really resume (or, for windows that
    chain on and on, the end reached after following ``_MAX_CHAIN`` of them).
    """
    end: datetime | None = None
    budget = _MAX_CHAIN
    while budget > 0:
        moment = now if end is None else end
        extended = end
        for mute in kpi.mute:
            start = _covering_fire(mute, moment, tz)
            if start <= moment:  # open at ``moment``; touching windows leave no gap
                window_end, used = _chain_end(mute, start, tz, budget)
                budget -= used
                if extended is None or window_end > extended:
                    extended = window_end
        if extended is None or extended == end:
            break
        end = extended
    return end


# -- internals -----------------------------------------------------------------


def _matches(kpi: Kpi, silence: Silence) -> bool:
    if silence.matcher is MatcherKind.KPI:
        return silence.value == kpi.id
    if silence.matcher is MatcherKind.TEAM:
        return kpi.team is not None and silence.value == kpi.team
    key, sep, value = silence.value.partition("=")
    return bool(sep) and kpi.labels.get(key.strip()) == value.strip()


def _effective_end(silence: Silence) -> datetime:
    if silence.expired_at is None:
        return silence.ends_at
    return min(silence.ends_at, silence.expired_at)


@lru_cache(maxsize=1024)
def _trigger(cron: str, tz: ZoneInfo) -> CronTrigger:
    # the rules validated the expression; building a trigger parses it, so keep them
    return CronTrigger.from_crontab(cron, timezone=tz)


def _next_fire(mute: Mute, at_or_after: datetime, tz: ZoneInfo) -> datetime:
    fire: datetime | None = _trigger(mute.cron, tz).get_next_fire_time(
        None, at_or_after.astimezone(tz)
    )
    # a cron without an end date always fires again; None would mean APScheduler changed
    assert fire is not None, f"cron {mute.cron!r} never fires"
    return fire.astimezone(tz)


def _window_end(mute: Mute, fire: datetime, tz: ZoneInfo) -> datetime:
    # wall-clock arithmetic in the zone ("for: 1d" from 00:00 is 00:00 the next day)
    return (fire.astimezone(tz) + mute.for_).astimezone(UTC)


def _covering_fire(mute: Mute, moment: datetime, tz: ZoneInfo) -> datetime:
    """The earliest fire time whose window is still open at ``moment`` (it may be later)."""
    local = moment.astimezone(tz)
    fire = _next_fire(mute, local - mute.for_ - _DST_SLACK, tz)
    # at most a DST hour's worth of fire times ended before ``moment``: skip them
    while _window_end(mute, fire, tz) <= moment:
        fire = _next_fire(mute, fire + _STEP, tz)
    return fire.astimezone(UTC)


def _chain_end(
    mute: Mute, fire: datetime, tz: ZoneInfo, budget: int
) -> tuple[datetime, int]:
    """The end of the window opened at ``fire``, following later windows that overlap it.

    Follows at most ``budget`` fire times; returns the end and how many it followed.
    """
    end = _window_end(mute, fire, tz)
    used = 0
    while used < budget:
        used += 1
        fire = _next_fire(mute, fire + _STEP, tz)
        if fire > end:
            break
        end = max(end, _window_end(mute, fire, tz))
    return end, max(used, 1)
