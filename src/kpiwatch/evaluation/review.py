"""The review calendar: when a KPI's owner should look at it again.

Reviews fall at ``review_time`` local time in the configured timezone:

* daily: every day;
* weekly: on Mondays;
* monthly: on the 1st;
* quarterly: on January, April, July and October 1st.

Wall-clock times are built in the timezone and then converted to UTC, so a
review stays at 09:00 local across DST changes. A review time that does not
exist on a spring-forward day is shifted forward by the gap (zoneinfo's
``fold=0``); an ambiguous one on a fall-back day is its first occurrence.
"""

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

from kpiwatch.config.rules import Kpi
from kpiwatch.evaluation.periods import add_periods, first_day
from kpiwatch.model import Event, EventKind, KpiState, Period, ReviewCadence

# a review cadence is a calendar period: the same first days as the periods KPIs judge
_PERIOD = {
    ReviewCadence.DAILY: Period.DAY,
    ReviewCadence.WEEKLY: Period.WEEK,
    ReviewCadence.MONTHLY: Period.MONTH,
    ReviewCadence.QUARTERLY: Period.QUARTER,
}


def next_review(
    cadence: ReviewCadence, after: datetime, tz: ZoneInfo, review_time: time
) -> datetime:
    """The first review moment strictly after ``after`` (aware), as an aware UTC datetime."""
    wall = review_time.replace(tzinfo=None, fold=0)
    period = _PERIOD[cadence]
    day = first_day(after.astimezone(tz).date(), period)
    while True:
        moment = datetime.combine(day, wall, tzinfo=tz).astimezone(UTC)
        if moment > after:
            return moment
        day = add_periods(day, period, 1)


def scheduled_review(
    previous: KpiState | None,
    cadence: ReviewCadence,
    now: datetime,
    tz: ZoneInfo,
    review_time: time,
) -> datetime:
    """The next review after an evaluation: the one already scheduled, unless the cadence
    in force changed (an escalation, a de-escalation) or none was scheduled yet."""
    if previous is None or previous.next_review is None or previous.review is not cadence:
        return next_review(cadence, now, tz, review_time)
    return previous.next_review


def review_tick(
    kpi: Kpi, state: KpiState, now: datetime, tz: ZoneInfo, review_time: time
) -> tuple[KpiState, tuple[Event, ...]]:
    """Emit ``review_due`` when the KPI's review is due; missed reviews coalesce into one.

    ``kpi.review_time`` overrides ``review_time``. A state without
    ``next_review`` only gets one scheduled (no event). The cadence is the one in
    force in ``state`` (escalated or not).
    """
    at = kpi.review_time or review_time
    due = state.next_review
    if due is None:
        return _replace_review(state, state.last_review, next_review(state.review, now, tz, at)), ()
    if due > now:
        return state, ()
    event = Event(
        kind=EventKind.REVIEW_DUE,
        key=f"{state.kpi_id}:review_due:{due.isoformat()}",
        at=now,
        kpi_id=state.kpi_id,
        data={
            "cadence": state.review.value,
            "since": state.since.isoformat(),  # the episode it belongs to (Slack threads)
            "escalated": state.escalated,
            "status": state.status.value,
            "value": state.value,
            "reasons": list(state.reasons),
            "due": due.isoformat(),
        },
    )
    return _replace_review(state, now, next_review(state.review, now, tz, at)), (event,)


def _replace_review(state: KpiState, last: datetime | None, upcoming: datetime) -> KpiState:
    return state._replace(last_review=last, next_review=upcoming)
