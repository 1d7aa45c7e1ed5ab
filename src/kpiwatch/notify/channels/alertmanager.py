"""The Alertmanager channel: red and yellow episodes as alerts (API v2).

Each KPI episode is one alert, identified (as Alertmanager identifies alerts) by
its labels: ``alertname="KpiStatus"``, ``kpi``, ``team`` (omitted without one),
``owner`` and ``severity`` (the kpiwatch status word, ``red`` or ``yellow``).
Like Prometheus, kpiwatch leases each firing alert: ``endsAt`` is now plus 4x
the refresh interval (KPIWATCH_ALERTMANAGER_REFRESH, 60 s) and a refresh job
re-posts still-firing alerts every interval, so an alert kpiwatch stops
refreshing (a daemon gone, a KPI removed or silenced) resolves by itself. A
transition to any other status posts the same labels with ``endsAt = now``:
resolved at once.

Transitions come through the outbox (retried, dead-lettered, counted); the
refresh posts directly, since the next refresh repeats it anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from kpiwatch import __version__
from kpiwatch.config.rules import Kpi, RuleSet
from kpiwatch.errors import DeliveryError
from kpiwatch.model import Delivery, Event, EventKind, KpiState, Status
from kpiwatch.notify.notice import Notice
from kpiwatch.notify.routing import alertmanager_for
from kpiwatch.notify.text import format_value

if TYPE_CHECKING:
    import requests

ALERTNAME = "KpiStatus"
FIRING = frozenset({Status.RED, Status.YELLOW})
# endsAt is this many refresh intervals ahead, as Prometheus leases 4x its resend delay:
# three refreshes may fail (or a replica die mid-slot) before a still-red KPI resolves
LEASE_REFRESHES = 4
_BODY_LIMIT = 200  # characters of Alertmanager's explanation kept in an error

Alert = dict[str, Any]


def labels(kpi: Kpi, severity: Status) -> dict[str, str]:
    """The labels that identify a KPI's alert; an empty team is omitted (Alertmanager
    treats an empty label as an absent one, so ``team=""`` matchers still match)."""
    found = {"alertname": ALERTNAME, "kpi": kpi.id, "owner": kpi.owner,
             "severity": severity.value}  # fmt: skip
    if kpi.team:
        found["team"] = kpi.team
    return found


def firing(
    kpi: Kpi, status: Status, value: float | None, reasons: Sequence[str], *,
    since: datetime, url: str, ends_at: datetime,
) -> Alert:  # fmt: skip
    """A firing alert for ``kpi`` being ``status`` (red or yellow) since ``since``."""
    return {
        "labels": labels(kpi, status),
        "annotations": {
            "summary": f"{kpi.name} is {status.value}: {format_value(value, kpi.unit)}",
            "reasons": "; ".join(reasons),
            "url": url,
        },
        "startsAt": _iso(since),
        "endsAt": _iso(ends_at),
        "generatorURL": url,
    }


def resolved(
    alert_labels: dict[str, str], summary: str, *, since: datetime, url: str, now: datetime
) -> Alert:
    """The alert with ``alert_labels`` resolved now (``endsAt=now``)."""
    return {
        "labels": alert_labels,
        "annotations": {"summary": summary, "url": url},
        "startsAt": _iso(since),
        "endsAt": _iso(now),
        "generatorURL": url,
    }


def removal(
    rules: RuleSet, kpi: Kpi, state: KpiState, now: datetime
) -> tuple[Event, Delivery] | None:
    """The event (and its delivery) that resolves the alert of ``kpi``, removed from
    ``rules`` (the rules it was in) while red or yellow; None if it has no alert.
    The event carries the labels: once removed, the rules no longer know them."""
    name = alertmanager_for(rules, kpi)
    status = state.episode_status  # a blind KPI's alert is its verdict's, still firing
    if name is None or status not in FIRING:
        return None
    event = Event(EventKind.STATUS_CHANGED, f"{kpi.id}:removed:{now.isoformat()}", now,
                  kpi_id=kpi.id, data={
                      "from": status.value, "to": Status.UNKNOWN.value,
                      "removed": True, "name": kpi.name,
                      "labels": labels(kpi, status), "since": state.since.isoformat(),
                  })  # fmt: skip
    return event, Delivery("alertmanager", name)


def state_alert(kpi: Kpi, state: KpiState, url: str, ends_at: datetime) -> Alert | None:
    """The alert a KPI's stored state asks for (the refresh), None unless red or yellow.

    A blind KPI's episode carries on (SPEC §5a), so its alert keeps firing as its
    verdict, with the data problem as the reason: a source outage resolves nothing.
    """
    status = state.episode_status
    if status not in FIRING:
        return None
    return firing(kpi, status, state.value, state.reasons, since=state.since, url=url,
                  ends_at=ends_at)  # fmt: skip


def transition_alerts(notice: Notice, now: datetime, lease: timedelta) -> list[Alert]:
    """What a status change posts: the new status's alert firing, if red or yellow, and
    the old one's resolved, if it was red or yellow and differs (red -> yellow changes
    ``severity``, so the red alert must end as the yellow one starts)."""
    kpi, event = notice.kpi, notice.event
    if event.kind is not EventKind.STATUS_CHANGED:
        return []
    if event.data.get("removed"):  # see removal(): the labels come with the event
        since = datetime.fromisoformat(str(event.data["since"]))
        summary = f"{event.data.get('name', event.kpi_id)} was removed from the rules"
        return [resolved(dict(event.data["labels"]), summary, since=min(since, now),
                         url=notice.url, now=now)]  # fmt: skip
    if kpi is None:  # removed since: its alert ends with its lease
        return []
    to = _status(event.data.get("to"))
    was = _status(event.data.get("from"))
    alerts = []
    if to in FIRING:
        reasons = [str(r) for r in event.data.get("reasons", [])]
        value = event.data.get("value")
        # the episode began at the transition; after a mute (from == to) the stored
        # state knows when it really began
        state = notice.state
        since = event.at
        if state is not None and state.status is to and state.since <= event.at:
            since = state.since
        alerts.append(firing(kpi, to, None if value is None else float(value), reasons,
                             since=since, url=notice.url, ends_at=now + lease))  # fmt: skip
    if was in FIRING and was is not to:
        # the old episode's start is unknown here: Alertmanager merges this into the
        # alert it has and keeps that one's (earlier) start; never after endsAt
        alerts.append(resolved(labels(kpi, was), f"{kpi.name} is no longer {was.value}",
                               since=min(event.at, now), url=notice.url, now=now))  # fmt: skip
    return alerts


class AlertmanagerChannel:
    name = "alertmanager"

    def __init__(
        self, url: str, *, refresh: timedelta = timedelta(minutes=1),
        now: Callable[[], datetime] = lambda: datetime.now(UTC), timeout: float = 10.0,
    ) -> None:  # fmt: skip
        self.url = url.rstrip("/")
        self.refresh = refresh  # how often the refresh job re-posts firing alerts
        self.lease = LEASE_REFRESHES * refresh  # how far ahead a firing alert's endsAt is
        self._now = now
        self._timeout = timeout
        self._session: requests.Session | None = None

    def send(self, notice: Notice) -> None:
        """Post what a status change means for the KPI's alert."""
        alerts = transition_alerts(notice, self._now(), self.lease)
        if alerts:
            self.post(alerts)

    def post(self, alerts: Sequence[Alert]) -> None:
        """POST alerts to ``/api/v2/alerts``, or raise DeliveryError (retryable unless
        Alertmanager refused them with a 4xx other than 408/429)."""
        import requests

        from kpiwatch.sources.web import shown_url

        endpoint = f"{self.url}/api/v2/alerts"
        try:
            response = self._client().post(endpoint, json=list(alerts), timeout=self._timeout)
        except requests.RequestException as exc:  # refused, DNS, timeout: may pass
            raise DeliveryError(f"{shown_url(endpoint)}: {type(exc).__name__}",
                                channel=self.name, retryable=True) from None  # fmt: skip
        if response.status_code < 300:
            return
        retryable = response.status_code in (408, 429) or response.status_code >= 500
        why = response.text.strip()[:_BODY_LIMIT]
        raise DeliveryError(
            f"{shown_url(endpoint)} answered HTTP {response.status_code}: {why}",
            channel=self.name, retryable=retryable,
        )  # fmt: skip

    def _client(self) -> requests.Session:
        if self._session is None:
            import requests

            self._session = requests.Session()
            self._session.headers["User-Agent"] = f"kpiwatch/{__version__}"
        return self._session


def _status(value: object) -> Status | None:
    try:
        return Status(str(value)) if value is not None else None
    except ValueError:
        return None


def _iso(at: datetime) -> str:
    # RFC 3339 in UTC, as Alertmanager's API documents it
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")
