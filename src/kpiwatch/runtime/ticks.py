"""The runner's ticks over stored states, once a minute: reviews that have come,
reminders of unacknowledged episodes, and mute windows that ended.

A mixin of :class:`kpiwatch.runtime.runner.Runner`: each tick reads the states,
and for each KPI it acts on takes the KPI's lock, reads its state again and saves
over it, so a tick never interleaves with an evaluation of the same KPI.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from kpiwatch.clock import Clock
from kpiwatch.config.rules import Kpi, RuleSet
from kpiwatch.errors import EvaluationSuperseded
from kpiwatch.evaluation import (
    ReminderPolicy,
    first_due,
    reminder_policy,
    reminder_tick,
    review_tick,
)
from kpiwatch.model import Event, EventKind, KpiState, Status
from kpiwatch.notify.silencing import active_mute
from kpiwatch.runtime.workspace import Workspace
from kpiwatch.store.fencing import Basis
from kpiwatch.store.repository import Store

# the statuses with something to remind of or tell after a mute: the ticks read only these
_RED_OR_YELLOW = frozenset({Status.RED, Status.YELLOW})


class StateTicks:
    """Reviews, reminders and mute-window ends (the Runner provides these attributes)."""

    _store: Store
    _clock: Clock
    _tz: ZoneInfo
    _review_time: time
    _reminders: ReminderPolicy
    _workspace: Workspace
    on_reminded: Callable[[Event], None] | None
    _lock_for: Callable[[str], threading.Lock]  # the KPI's lock, shared with evaluations
    # the rule set _reminder_scope() last worked out, and its answer
    _reminders_known: tuple[RuleSet, frozenset[Status], timedelta] | None = None

    def tick_reviews(self) -> int:
        """Emit review_due for every KPI whose review has come; returns how many."""
        workspace = self._workspace
        now = self._clock.now()
        due = 0
        for kpi_id, state in self._store.states(review_by=now).items():
            kpi = workspace.rules.by_id.get(kpi_id)
            if kpi is None or state.next_review is None or state.next_review > now:
                continue
            with self._lock_for(kpi_id):
                current = self._store.get_state(kpi_id)
                if current is None or current.next_review is None or current.next_review > now:
                    continue
                new_state, events = review_tick(kpi, current, now, self._tz, self._review_time)
                if self._save_tick(workspace, current, new_state, events):
                    due += len(events)
        return due

    def tick_reminders(self) -> int:
        """Emit the reminders due for unacknowledged red (or yellow) episodes; returns how many.

        A muted or silenced KPI's reminder is still stored, and the outbox suppresses
        its delivery: the schedule moves on (see :mod:`kpiwatch.evaluation.reminders`).
        """
        workspace = self._workspace
        rules = workspace.rules
        now = self._clock.now()
        told = 0
        statuses, earliest = self._reminder_scope(rules)
        if not statuses:
            return 0
        started_by = now - earliest  # a younger episode has no reminder due yet
        for kpi_id, state in self._store.states(statuses=statuses, started_by=started_by).items():
            kpi = rules.by_id.get(kpi_id)
            if kpi is None:
                continue
            policy = self._policy(rules, kpi)
            if not reminder_tick(policy, state, False, now)[1]:
                continue  # nothing due: no ack to read, no lock to take
            with self._lock_for(kpi_id):
                current = self._store.get_state(kpi_id)
                if current is None:
                    continue
                acked = self._store.ack_for(kpi_id, current.since) is not None
                new_state, events = reminder_tick(policy, current, acked, now)
                if not events or not self._save_tick(workspace, current, new_state, events):
                    continue
            told += len(events)
            for event in events:
                if self.on_reminded is not None:
                    self.on_reminded(event)
        return told

    def _policy(self, rules: RuleSet, kpi: Kpi) -> ReminderPolicy:
        team = rules.teams.get(kpi.team or "")
        return reminder_policy(kpi.reminders, team.reminders if team else None, self._reminders)

    def _reminder_scope(self, rules: RuleSet) -> tuple[frozenset[Status], timedelta]:
        """The states a reminder may be due for under ``rules``: the statuses some KPI's
        policy reminds of, in episodes at least as old as the earliest first reminder.
        Worked out once per rule set, so that a tick reads only those states (a daemon's
        fresh red KPIs would otherwise be read and built whole every minute)."""
        known = self._reminders_known
        if known is not None and known[0] is rules:
            return known[1], known[2]
        policies = {self._policy(rules, kpi) for kpi in rules.kpis}
        statuses = frozenset(s for s in Status if any(p.reminds(s) for p in policies))
        earliest = min(map(first_due, policies), default=timedelta(0))
        self._reminders_known = (rules, statuses, earliest)
        return statuses, earliest

    def _save_tick(
        self, workspace: Workspace, read: KpiState, state: KpiState, events: Sequence[Event]
    ) -> bool:
        """Save a tick's new state and its events over the state it read; False when the
        KPI was evaluated meanwhile (here or on a replica): the next tick looks again."""
        deliveries = {e.key: workspace.router.route(e) for e in events}
        try:
            self._store.save_state(state, events, deliveries, based_on=Basis.of(read))
        except EvaluationSuperseded:
            return False
        return True

    def tick_mute_ends(self, since: datetime) -> int:
        """Notify KPIs not green when a mute window closed between ``since`` and now.

        Their transitions were held back during the window; people hear the
        state they are left with. Returns how many were notified.
        """
        workspace = self._workspace
        now = self._clock.now()
        if not any(kpi.mute for kpi in workspace.rules.kpis):
            return 0  # no mute window in the rules: no state to read
        states = self._store.states(statuses=_RED_OR_YELLOW)
        notified = 0
        for kpi in workspace.rules.kpis:
            state = states.get(kpi.id)
            # red or yellow: a green KPI has nothing to tell, a blind one no verdict to tell
            if not kpi.mute or state is None or state.status not in _RED_OR_YELLOW:
                continue
            ended = active_mute(kpi, since, self._tz)
            if ended is None or active_mute(kpi, now, self._tz) is not None:
                continue
            event = Event(EventKind.STATUS_CHANGED, f"{kpi.id}:mute_ended:{now.isoformat()}",
                          now, kpi_id=kpi.id, data={
                              "from": state.status.value, "to": state.status.value,
                              "value": state.value, "unit": kpi.unit,
                              "reasons": list(state.reasons),
                              "after_mute": ended.comment or ended.cron,
                          })  # fmt: skip
            with self._lock_for(kpi.id):
                deliveries = {event.key: workspace.router.route(event)}
                for _ in range(3):  # evaluated meanwhile (another replica): read it again
                    current = self._store.get_state(kpi.id) or state
                    with contextlib.suppress(EvaluationSuperseded):
                        self._store.save_state(current, [event], deliveries,
                                               based_on=Basis.of(current))  # fmt: skip
                        notified += 1
                        break
        return notified
