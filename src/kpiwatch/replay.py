"""Replay: a KPI's observations through its rules on a simulated clock.

The same code the daemon runs, without I/O: at each moment the KPI fell due,
:func:`replay` gives :func:`~kpiwatch.evaluation.evaluate` the observations
made by then (within the runner's history window) and the state of the step
before, ticks the reviews that fell due in between, and routes every event
as the daemon's outbox would. `kpiwatch backtest` replays stored history and
`kpiwatch test` replays a test file's series through it.

What a replay cannot know: fetch errors (they are not stored, so a replayed
KPI is never blind from a source outage), silences (one-off, stored apart);
recurring ``mute`` windows are applied.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, time
from typing import NamedTuple
from zoneinfo import ZoneInfo

from kpiwatch.config.rules import Kpi
from kpiwatch.evaluation import evaluate, history_window, review_tick
from kpiwatch.model import Delivery, Evaluation, Event, KpiState, Observation
from kpiwatch.notify.routing import Router
from kpiwatch.notify.silencing import active_mute

# every channel counts as configured: a replay shows where each event is meant to go
ALL_CHANNELS = frozenset({"slack", "email", "webhook", "log"})


@dataclass(frozen=True, slots=True)
class Notice:
    """One notification a replayed event would have caused."""

    event: Event
    delivery: Delivery
    muted: bool  # a recurring mute window held it back (recorded, not sent)

    @property
    def route(self) -> str:
        """``slack:#cs-kpis``, ``email:dana@example.com``: the channel and its target."""
        return f"{self.delivery.channel}:{self.delivery.target}"


class Step(NamedTuple):
    """One simulated evaluation and what it caused."""

    at: datetime
    evaluation: Evaluation
    state: KpiState  # after the evaluation and the reviews that fell due before it
    events: tuple[Event, ...]  # reviews due since the step before, then the evaluation's
    notices: tuple[Notice, ...]


def replay(
    kpi: Kpi,
    observations: Sequence[Observation],
    moments: Iterable[datetime],
    router: Router,
    *,
    tz: ZoneInfo,
    review_time: time,
    previous: KpiState | None = None,
) -> Iterator[Step]:
    """Evaluate ``kpi`` at each of ``moments`` (ascending) over ``observations`` (ascending):
    at each moment, the observations made by then, within the history window."""
    state = previous
    known = oldest = 0  # observations[oldest:known] is the history an evaluation sees
    for now in moments:
        reviews: list[Event] = []
        # the daemon ticks reviews every minute: each one at its due moment, before this step
        while state is not None and state.next_review is not None and state.next_review <= now:
            state, due = review_tick(kpi, state, state.next_review, tz, review_time)
            reviews.extend(due)
        # the moments only go forward, and so do both ends of the window
        while known < len(observations) and observations[known].observed_at <= now:
            known += 1
        window = now - history_window(kpi)
        while oldest < known and observations[oldest].observed_at < window:
            oldest += 1
        evaluation = evaluate(
            kpi, observations[oldest:known], state, now, tz=tz, review_time=review_time
        )
        state = evaluation.state
        events = (*reviews, *evaluation.events)
        notices = tuple(_notices(kpi, events, router, tz)) if events else ()
        yield Step(now, evaluation, state, events, notices)


def _notices(kpi: Kpi, events: Sequence[Event], router: Router, tz: ZoneInfo) -> Iterator[Notice]:
    for event in events:
        muted = active_mute(kpi, event.at, tz) is not None
        for delivery in router.route(event):
            yield Notice(event, delivery, muted)
