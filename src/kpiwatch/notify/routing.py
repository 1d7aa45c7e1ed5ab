"""Routing: who hears about an event (SPEC §5).

The KPI's ``notify``, else its team's, else the owner's email. Status changes
go to Slack; red and escalations also email the owner (reminders go as a change
to their status does); reviews email the owner
and post to the team channel; a source's data incidents go to the source's owner,
else on-call; a KPI's own data problem goes to the KPI's owner alone (SPEC §5a: never
to the KPI's channels). Status changes of a KPI that names an Alertmanager (or whose team does)
also go there. Recipients on a channel that is not configured fall back to the log,
so nothing is dropped on a fresh install.
"""

from __future__ import annotations

from collections.abc import Sequence

from kpiwatch.config.rules import Kpi, RuleSet
from kpiwatch.model import Delivery, Event, EventKind


class Router:
    def __init__(
        self,
        rules: RuleSet,
        *,
        channels: frozenset[str] = frozenset({"log"}),
        oncall_emails: Sequence[str] = (),
    ) -> None:
        self._rules = rules
        self._channels = channels
        self._oncall = tuple(oncall_emails)

    def route(self, event: Event) -> list[Delivery]:
        """The deliveries for one event, never empty."""
        intended = self._intended(event)
        usable = [d for d in intended if d.channel in self._channels]
        if usable:
            return _unique(usable)
        # nowhere configured to send it: the log names who should have heard
        who = ", ".join(f"{d.channel}:{d.target}" for d in _unique(intended)) or "on-call"
        return [Delivery("log", who)]

    def _intended(self, event: Event) -> list[Delivery]:
        if event.kind in (EventKind.DATA_INCIDENT, EventKind.DATA_RECOVERED):
            return self._data_owner(event)
        if event.kind is EventKind.DELIVERY_FAILED or event.kpi_id is None:
            return [Delivery("email", address) for address in self._oncall]
        if event.kind is EventKind.RESTATED:
            # recorded and shown; people hear of it when it changes a verdict (SPEC §2a)
            return [Delivery("log", "")]
        kpi = self._rules.by_id.get(event.kpi_id)
        if kpi is None:  # removed from the rules since the event was made
            return [Delivery("email", address) for address in self._oncall]
        slack, emails = self._recipients(kpi)
        owner = [Delivery("email", kpi.owner)]
        chat = [Delivery("slack", slack)] if slack else []
        return (self._by_kind(event, kpi, chat, owner, emails) + self._webhooks(kpi)
                + self._alerts(event, kpi))  # fmt: skip

    def _data_owner(self, event: Event) -> list[Delivery]:
        """A source's incident: its owner, else on-call. A KPI's blind spell: its owner."""
        kpi = self._rules.by_id.get(event.kpi_id or "")
        if kpi is not None:
            return [Delivery("email", kpi.owner)]
        source = self._rules.sources.get(event.source or "")
        if source is not None and source.owner:
            return [Delivery("email", source.owner)]
        return [Delivery("email", address) for address in self._oncall]

    def _by_kind(
        self, event: Event, kpi: Kpi, chat: list[Delivery], owner: list[Delivery],
        emails: list[str],
    ) -> list[Delivery]:  # fmt: skip
        match event.kind:
            case EventKind.STATUS_CHANGED | EventKind.REMINDER:
                # a reminder goes where a change to its status went (its "status")
                red = (event.data.get("to") or event.data.get("status")) == "red"
                if not chat:
                    return [Delivery("email", e) for e in emails]
                return chat + (owner if red else [])
            case EventKind.ESCALATED | EventKind.DE_ESCALATED:
                return chat + owner
            case EventKind.ACKNOWLEDGED | EventKind.ANNOTATED:
                return chat  # the episode's conversation; nobody is emailed a follow-up
            case EventKind.REVIEW_DUE:
                team = self._rules.teams.get(kpi.team or "")
                team_chat = [Delivery("slack", team.slack)] if team and team.slack else chat
                return owner + team_chat
            case _:
                return chat or [Delivery("email", e) for e in emails]

    def _webhooks(self, kpi: Kpi) -> list[Delivery]:
        """Every KPI event also goes to the KPI's webhook, else its team's."""
        team = self._rules.teams.get(kpi.team or "")
        url = (kpi.notify.webhook if kpi.notify else None) or (team.webhook if team else None)
        return [Delivery("webhook", url)] if url else []

    def _alerts(self, event: Event, kpi: Kpi) -> list[Delivery]:
        """Status changes fire and resolve the KPI's alert in its Alertmanager."""
        name = alertmanager_for(self._rules, kpi)
        if name is None or event.kind is not EventKind.STATUS_CHANGED:
            return []
        return [Delivery("alertmanager", name)]

    def _recipients(self, kpi: Kpi) -> tuple[str | None, list[str]]:
        """(Slack channel, email addresses): the KPI's notify, else its team's, else the owner."""
        team = self._rules.teams.get(kpi.team or "")
        slack = (kpi.notify.slack if kpi.notify else None) or (team.slack if team else None)
        emails = (kpi.notify.email if kpi.notify else []) or (team.email if team else [])
        return slack, list(emails) or [kpi.owner]


def alertmanager_for(rules: RuleSet, kpi: Kpi) -> str | None:
    """The Alertmanager a KPI's alerts go to: its notify's, else its team's, else none."""
    if kpi.notify is not None and kpi.notify.alertmanager:
        return kpi.notify.alertmanager
    team = rules.teams.get(kpi.team or "")
    return team.alertmanager if team else None


def _unique(deliveries: list[Delivery]) -> list[Delivery]:
    return list(dict.fromkeys(deliveries))
