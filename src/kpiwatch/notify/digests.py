"""Gather the on-call and review digests from the store and the running rules."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from kpiwatch.config.rules import Kpi, RuleSet
from kpiwatch.model import DeliveryState, EventKind, KpiState, Status
from kpiwatch.notify.digest_model import DigestKpi, OncallDigest, ReviewDigest
from kpiwatch.notify.notices import ANNOTATION_WINDOW, RECENT_POINTS
from kpiwatch.store.repository import Store

ONCALL = "oncall"  # digest_marks key
_ATTENTION = {Status.RED: 0, Status.YELLOW: 1, Status.UNKNOWN: 2}


def digest_kpi(store: Store, kpi: Kpi, state: KpiState, base_url: str, now: datetime) -> DigestKpi:
    return DigestKpi(
        kpi=kpi,
        state=state,
        recent=tuple(store.history(kpi.id, limit=RECENT_POINTS)),
        annotations=tuple(store.annotations(kpi.id, since=now - ANNOTATION_WINDOW, limit=5)),
        ack=store.ack_for(kpi.id, state.since),
        url=f"{base_url.rstrip('/')}/kpis/{kpi.id}",
    )


def oncall_digest(store: Store, rules: RuleSet, base_url: str, now: datetime) -> OncallDigest:
    """Red, yellow and unknown KPIs now, and what happened since the last digest."""
    since = store.digest_mark(ONCALL)
    states = store.states()
    attention = sorted(
        (
            (kpi, states[kpi.id])
            for kpi in rules.kpis
            if kpi.id in states and states[kpi.id].status in _ATTENTION
        ),
        key=lambda pair: (_ATTENTION[pair[1].status], pair[1].since),
    )
    known = rules.by_id
    transitions = [c for c in store.status_changes_since(since) if c.kpi_id in known]
    events = store.events(
        since=since,
        kinds=[EventKind.ESCALATED, EventKind.DE_ESCALATED, EventKind.DATA_INCIDENT,
               EventKind.DATA_RECOVERED],
    )  # fmt: skip
    return OncallDigest(
        since=since,
        until=now,
        attention=tuple(digest_kpi(store, k, s, base_url, now) for k, s in attention),
        transitions=tuple(transitions),  # oldest first, as the store gives them
        escalations=tuple(
            e for e in events if e.kind in (EventKind.ESCALATED, EventKind.DE_ESCALATED)
        ),
        # the sources' incidents; a KPI's own spell is its owner's
        source_problems=tuple(
            e
            for e in events
            if e.kind in (EventKind.DATA_INCIDENT, EventKind.DATA_RECOVERED) and e.kpi_id is None
        ),
        dead=tuple(store.messages(states=[DeliveryState.DEAD], limit=100)),
        url=f"{base_url.rstrip('/')}/",
    )


def review_digests(
    store: Store, rules: RuleSet, base_url: str, now: datetime, tz: ZoneInfo
) -> list[ReviewDigest]:
    """Per owner, the KPIs whose review falls due by the end of today (local time)."""
    local = now.astimezone(tz)
    end_of_day = (local.replace(hour=0, minute=0, second=0, microsecond=0)
                  + timedelta(days=1))  # fmt: skip
    states = store.states()
    by_owner: dict[str, list[DigestKpi]] = {}
    for kpi in rules.kpis:
        state = states.get(kpi.id)
        if state is None or state.next_review is None or state.next_review >= end_of_day:
            continue
        by_owner.setdefault(kpi.owner, []).append(digest_kpi(store, kpi, state, base_url, now))
    return [
        ReviewDigest(owner=owner, due=tuple(items), until=now, url=f"{base_url.rstrip('/')}/")
        for owner, items in sorted(by_owner.items())
    ]
