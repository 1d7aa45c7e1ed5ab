"""Silences (by KPI, team, label) and recurring mute windows (cron + for, in a timezone)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from kpiwatch.config.rules import Kpi
from kpiwatch.model import MatcherKind, Silence
from kpiwatch.notify.silencing import active_mute, matching_silence, mute_ends

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")


def kpi(**changes: Any) -> Kpi:
    fields: dict[str, Any] = {
        "id": "revenue",
        "name": "Revenue",
        "owner": "sam@example.com",
        "direction": "higher_is_better",
        "source": "push",
        "team": "finance",
        "labels": {"region": "emea", "tier": "1"},
    }
    fields.update(changes)
    return Kpi.model_validate(fields)


def silence(
    matcher: MatcherKind,
    value: str,
    *,
    id: int = 1,
    start: float = -1,
    end: float = 1,
    expired: float | None = None,
) -> Silence:
    """A silence from ``start`` to ``end`` hours around T0."""
    return Silence(
        id=id,
        matcher=matcher,
        value=value,
        starts_at=T0 + timedelta(hours=start),
        ends_at=T0 + timedelta(hours=end),
        author="sam",
        comment="maintenance",
        created_at=T0 + timedelta(hours=start),
        expired_at=None if expired is None else T0 + timedelta(hours=expired),
    )


# -- silences --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("matcher", "value", "hit"),
    [
        (MatcherKind.KPI, "revenue", True),
        (MatcherKind.KPI, "revenu", False),
        (MatcherKind.TEAM, "finance", True),
        (MatcherKind.TEAM, "growth", False),
        (MatcherKind.LABEL, "region=emea", True),
        (MatcherKind.LABEL, "region = emea", True),
        (MatcherKind.LABEL, "tier=1", True),
        (MatcherKind.LABEL, "region=apac", False),
        (MatcherKind.LABEL, "zone=emea", False),
        (MatcherKind.LABEL, "region", False),  # no "=": matches nothing
    ],
)
def test_silence_matchers(matcher: MatcherKind, value: str, hit: bool) -> None:
    found = matching_silence(kpi(), [silence(matcher, value)], T0)
    assert (found is not None) is hit


def test_team_silence_skips_kpis_without_a_team() -> None:
    assert matching_silence(kpi(team=None), [silence(MatcherKind.TEAM, "finance")], T0) is None


def test_only_active_silences_count() -> None:
    future = silence(MatcherKind.KPI, "revenue", start=1, end=2)
    ended = silence(MatcherKind.KPI, "revenue", start=-2, end=0)  # ends_at is exclusive
    expired = silence(MatcherKind.KPI, "revenue", start=-2, end=5, expired=-0.5)
    assert matching_silence(kpi(), [future, ended, expired], T0) is None
    not_yet_expired = silence(MatcherKind.KPI, "revenue", start=-2, end=5, expired=0.5)
    assert matching_silence(kpi(), [not_yet_expired], T0) == not_yet_expired


def test_the_longest_matching_silence_wins() -> None:
    short = silence(MatcherKind.KPI, "revenue", id=1, end=1)
    long = silence(MatcherKind.TEAM, "finance", id=2, end=8)
    cut = silence(MatcherKind.LABEL, "region=emea", id=3, end=24, expired=2)
    assert matching_silence(kpi(), [short, long, cut], T0) == long


# -- mute windows --------------------------------------------------------------------


FREEZE = [{"cron": "0 0 24 12 *", "for": "9d", "comment": "year-end freeze"}]


@pytest.mark.parametrize(
    ("moment", "muted"),
    [
        (datetime(2025, 12, 23, 23, 59, 59), False),
        (datetime(2025, 12, 24, 0, 0), True),  # the window opens at the fire time
        (datetime(2025, 12, 30, 12, 0), True),
        (datetime(2026, 1, 1, 23, 59, 59), True),
        (datetime(2026, 1, 2, 0, 0), False),  # 24 Dec 00:00 + 9d: the end is exclusive
        (datetime(2026, 1, 3, 0, 0, 1), False),
        (datetime(2026, 6, 1), False),
    ],
)
def test_year_end_freeze(moment: datetime, muted: bool) -> None:
    frozen = kpi(mute=FREEZE)
    now = moment.replace(tzinfo=UTC)
    found = active_mute(frozen, now, ZoneInfo("UTC"))
    assert (found is not None) is muted
    expected_end = datetime(2026, 1, 2, tzinfo=UTC) if muted else None
    assert mute_ends(frozen, now, ZoneInfo("UTC")) == expected_end
    if found is not None:
        assert found.comment == "year-end freeze"


def test_mute_windows_follow_the_timezone() -> None:
    frozen = kpi(mute=FREEZE)
    # 23:30 UTC on 23 Dec is already 24 Dec 00:30 in Berlin
    now = datetime(2025, 12, 23, 23, 30, tzinfo=UTC)
    assert active_mute(frozen, now, BERLIN) is not None
    assert active_mute(frozen, now, ZoneInfo("UTC")) is None
    assert mute_ends(frozen, now, BERLIN) == datetime(2026, 1, 1, 23, 0, tzinfo=UTC)


def test_a_window_crossing_dst_lasts_in_wall_clock_time() -> None:
    # Sunday 31 March 2024: Berlin skips 02:00-03:00, so that day has 23 hours
    sundays = kpi(mute=[{"cron": "0 0 * * SUN", "for": "1d"}])
    opened = datetime(2024, 3, 30, 23, 0, tzinfo=UTC)  # Sun 00:00 CET
    closes = datetime(2024, 3, 31, 22, 0, tzinfo=UTC)  # Mon 00:00 CEST
    assert active_mute(sundays, opened, BERLIN) is not None
    assert active_mute(sundays, opened - timedelta(seconds=1), BERLIN) is None
    assert mute_ends(sundays, opened + timedelta(hours=5), BERLIN) == closes
    assert active_mute(sundays, closes - timedelta(seconds=1), BERLIN) is not None
    assert active_mute(sundays, closes, BERLIN) is None
    # and in autumn (27 October 2024, 25 hours) the window is an hour longer
    autumn = datetime(2024, 10, 27, 12, 0, tzinfo=UTC)
    assert mute_ends(sundays, autumn, BERLIN) == datetime(2024, 10, 27, 23, 0, tzinfo=UTC)


def test_overlapping_windows_end_when_the_last_one_does() -> None:
    # every day at 08:00 for 1d, and a Monday window: muted from the first fire on
    overlapping = kpi(
        mute=[{"cron": "0 8 * * *", "for": "1d"}, {"cron": "0 9 * * MON", "for": "2d"}]
    )
    now = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday
    assert active_mute(overlapping, now, ZoneInfo("UTC")) is not None
    end = mute_ends(overlapping, now, ZoneInfo("UTC"))
    assert end is not None
    assert end > now + timedelta(days=30)


def test_frequent_cron_with_a_short_window() -> None:
    # the first five minutes of every hour
    hourly = kpi(mute=[{"cron": "0 * * * *", "for": "5m"}])
    tz = ZoneInfo("UTC")
    assert active_mute(hourly, datetime(2026, 3, 2, 10, 4, 59, tzinfo=UTC), tz) is not None
    assert active_mute(hourly, datetime(2026, 3, 2, 10, 5, tzinfo=UTC), tz) is None
    assert mute_ends(hourly, datetime(2026, 3, 2, 10, 1, tzinfo=UTC), tz) == datetime(
        2026, 3, 2, 10, 5, tzinfo=UTC
    )


def test_no_mutes_means_never_muted() -> None:
    assert active_mute(kpi(), T0, BERLIN) is None
    assert mute_ends(kpi(), T0, BERLIN) is None


def test_the_first_open_window_is_reported() -> None:
    two = kpi(
        mute=[
            {"cron": "0 0 1 1 *", "for": "1d", "comment": "new year"},
            {"cron": "0 0 * * *", "for": "1h", "comment": "nightly"},
        ]
    )
    tz = ZoneInfo("UTC")
    found = active_mute(two, datetime(2026, 1, 1, 0, 30, tzinfo=UTC), tz)
    assert found is not None
    assert found.comment == "new year"
    found = active_mute(two, datetime(2026, 1, 5, 0, 30, tzinfo=UTC), tz)
    assert found is not None
    assert found.comment == "nightly"
