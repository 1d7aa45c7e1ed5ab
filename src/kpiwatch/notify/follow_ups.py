"""Acks and annotations of a running red or yellow episode, told in its Slack thread.

An ack or an annotation is recorded whatever the KPI's status; while a red or
yellow episode runs (blind or not) it is also an event, stored with the ack or
the note in one transaction and routed like the episode's other follow-ups: a
reply in the episode's thread, whose parent is then edited to show it
("acknowledged by dana: …"). The API and the CLI both come through here.
"""

from __future__ import annotations

from datetime import datetime

from kpiwatch.config.rules import Kpi
from kpiwatch.model import Ack, Annotation, Event, EventKind, KpiState
from kpiwatch.notify.routing import Router
from kpiwatch.store.repository import Store


def follow_up(
    kind: EventKind, kpi: Kpi, state: KpiState | None, author: str, text: str, now: datetime
) -> Event | None:
    """The event of an ack or annotation by ``author``; None unless a red or yellow
    episode runs (there is no conversation to add to)."""
    if state is None or not state.ackable:
        return None
    since = state.since.isoformat()
    return Event(
        kind=kind,
        key=f"{kpi.id}:{kind.value}:{since}:{now.isoformat()}",
        at=now,
        kpi_id=kpi.id,
        data={
            "since": since,  # the episode it belongs to: Slack replies in its thread
            "author": author,
            "text": text,
            # what the KPI was when it happened (SPEC §5: a message tells its own event)
            "status": state.status.value,
            "verdict": state.episode_status.value,
            "value": state.value,
            "unit": kpi.unit,
            "reasons": list(state.reasons),
        },
    )


def acknowledge(
    store: Store, router: Router, kpi: Kpi, state: KpiState, author: str, comment: str,
    now: datetime,
) -> Ack:  # fmt: skip
    """Acknowledge the state's episode, and tell its thread."""
    event = follow_up(EventKind.ACKNOWLEDGED, kpi, state, author, comment, now)
    events = [] if event is None else [event]
    deliveries = {e.key: router.route(e) for e in events}
    return store.ack(kpi.id, state.since, author, comment, now, events=events,
                     deliveries=deliveries)  # fmt: skip


def annotate(
    store: Store, router: Router, kpi: Kpi, at: datetime, text: str, author: str, now: datetime
) -> Annotation:
    """Record why a KPI moved; tell the thread of its red or yellow episode, if one runs."""
    event = follow_up(EventKind.ANNOTATED, kpi, store.get_state(kpi.id), author, text, now)
    events = [] if event is None else [event]
    deliveries = {e.key: router.route(e) for e in events}
    return store.annotate(kpi.id, at, text, author, now, events=events, deliveries=deliveries)
