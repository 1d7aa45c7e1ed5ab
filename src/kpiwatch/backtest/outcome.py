"""One KPI's replay summed up: transitions, events, notifications, episodes (SPEC §3a).

:func:`replay_kpi` steps the clock at the KPI's own schedule (``every``/``cron``, on
the daemon's grid) over a range and collects what :func:`kpiwatch.replay.replay`
reports; :func:`compare` sets two outcomes of one KPI side by side.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, time
from zoneinfo import ZoneInfo

from kpiwatch.config.rules import Kpi
from kpiwatch.model import Event, EventKind, KpiState, Observation, Status
from kpiwatch.notify.routing import Router
from kpiwatch.replay import Notice, replay
from kpiwatch.runtime.scheduler import due_times


@dataclass(frozen=True, slots=True)
class Transition:
    at: datetime
    from_: Status | None  # None: the KPI's first evaluation (notified when not green)
    to: Status
    value: float | None
    reasons: tuple[str, ...]

    def as_json(self) -> dict[str, object]:
        return {
            "at": self.at.isoformat(),
            "from": None if self.from_ is None else self.from_.value,
            "to": self.to.value,
            "value": self.value,
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True, slots=True)
class Episode:
    """A continuous run of one effective status; ``end`` None: still running at the end."""

    status: Status
    start: datetime
    end: datetime | None

    def as_json(self) -> dict[str, object]:
        end = None if self.end is None else self.end.isoformat()
        return {"status": self.status.value, "start": self.start.isoformat(), "end": end}


@dataclass
class KpiOutcome:
    """What the rules did to one KPI over ``[start, end]``."""

    kpi: Kpi
    start: datetime
    end: datetime
    evaluations: int = 0
    transitions: list[Transition] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)  # escalations, reviews due
    notices: list[Notice] = field(default_factory=list)
    episodes: list[Episode] = field(default_factory=list)
    final: KpiState | None = None

    @property
    def sent(self) -> list[Notice]:
        """The notifications that would have gone out (not held back by a mute window)."""
        return [notice for notice in self.notices if not notice.muted]

    def seconds_in(self) -> dict[str, float]:
        spent: dict[str, float] = {}
        for episode in self.episodes:
            seconds = ((episode.end or self.end) - episode.start).total_seconds()
            spent[episode.status.value] = spent.get(episode.status.value, 0.0) + seconds
        return spent

    def summary(self) -> dict[str, dict[str, float]]:
        return {
            "episodes": dict(Counter(e.status.value for e in self.episodes)),
            "seconds_in": self.seconds_in(),
            "notifications": dict(Counter(n.delivery.channel for n in self.sent)),
        }

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.kpi.id,
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "evaluations": self.evaluations,
            "transitions": [t.as_json() for t in self.transitions],
            "events": [
                {"at": e.at.isoformat(), "kind": e.kind.value, **e.data} for e in self.events
            ],
            "notifications": [
                {
                    "at": n.event.at.isoformat(),
                    "event": n.event.kind.value,
                    "route": n.route,
                    "muted": n.muted,
                }
                for n in self.notices
            ],
            "episodes": [e.as_json() for e in self.episodes],
            "summary": self.summary(),
            "final": None
            if self.final is None
            else {
                "status": self.final.status.value,
                "since": self.final.since.isoformat(),
                "escalated": self.final.escalated,
                "review": self.final.review.value,
            },
        }


def replay_kpi(
    kpi: Kpi,
    observations: Sequence[Observation],
    start: datetime,
    end: datetime,
    router: Router,
    *,
    tz: ZoneInfo,
    review_time: time,
) -> KpiOutcome:
    """Replay ``kpi`` from a fresh state at each time it fell due in ``[start, end]``."""
    outcome = KpiOutcome(kpi, start, end)
    moments = due_times(kpi, start, end, tz)
    for step in replay(kpi, observations, moments, router, tz=tz, review_time=review_time):
        outcome.evaluations += 1
        state = step.state
        if not outcome.episodes or state.since != outcome.episodes[-1].start:
            if outcome.episodes:
                outcome.episodes[-1] = Episode(
                    outcome.episodes[-1].status, outcome.episodes[-1].start, state.since
                )
            outcome.episodes.append(Episode(state.status, state.since, None))
        for event in step.events:
            if event.kind is EventKind.STATUS_CHANGED:
                was = event.data.get("from")
                outcome.transitions.append(Transition(
                    event.at, None if was is None else Status(str(was)), state.status,
                    step.evaluation.value, tuple(event.data.get("reasons", ())),
                ))  # fmt: skip
            else:
                outcome.events.append(event)
        outcome.notices.extend(step.notices)
        outcome.final = state
    return outcome


@dataclass(frozen=True)
class Replayed:
    """One KPI under the current rules (``a``) and, with ``--compare``, the other (``b``)."""

    a: KpiOutcome
    b: KpiOutcome | None


@dataclass(frozen=True)
class Comparison:
    """How one KPI fares under other rules (``b``) than the current ones (``a``)."""

    a: KpiOutcome
    b: KpiOutcome
    transitions_added: list[Transition]
    transitions_removed: list[Transition]
    episodes_added: list[Episode]
    episodes_removed: list[Episode]

    def as_json(self) -> dict[str, object]:
        return {
            "transitions": {"a": len(self.a.transitions), "b": len(self.b.transitions)},
            "notifications": {"a": len(self.a.sent), "b": len(self.b.sent)},
            "transitions_added": [t.as_json() for t in self.transitions_added],
            "transitions_removed": [t.as_json() for t in self.transitions_removed],
            "episodes_added": [e.as_json() for e in self.episodes_added],
            "episodes_removed": [e.as_json() for e in self.episodes_removed],
        }


def compare(a: KpiOutcome, b: KpiOutcome) -> Comparison:
    """Transitions (by moment and statuses) and episodes (by status and start) that the
    rules of ``b`` add to or remove from ``a``."""
    ta = {(t.at, t.from_, t.to): t for t in a.transitions}
    tb = {(t.at, t.from_, t.to): t for t in b.transitions}
    ea = {(e.status, e.start): e for e in a.episodes}
    eb = {(e.status, e.start): e for e in b.episodes}
    return Comparison(
        a,
        b,
        transitions_added=[t for key, t in tb.items() if key not in ta],
        transitions_removed=[t for key, t in ta.items() if key not in tb],
        episodes_added=[e for key, e in eb.items() if key not in ea],
        episodes_removed=[e for key, e in ea.items() if key not in eb],
    )
