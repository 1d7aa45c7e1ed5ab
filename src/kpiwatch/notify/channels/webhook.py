"""The webhook channel: each event as JSON, signed, for anything else to act on.

PagerDuty, Teams, a ticketing system: whatever can take an HTTP POST. With a
secret, the body is signed like GitHub's webhooks:
``X-Kpiwatch-Signature: sha256=<hex HMAC-SHA256 of the raw body>``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import TYPE_CHECKING, Any

from kpiwatch import __version__
from kpiwatch.errors import DeliveryError
from kpiwatch.notify.notice import Notice

if TYPE_CHECKING:
    import requests

SIGNATURE_HEADER = "X-Kpiwatch-Signature"


def payload(notice: Notice) -> dict[str, Any]:
    """The JSON document a webhook receives (documented in the README)."""
    event, kpi, state = notice.event, notice.kpi, notice.state
    return {
        "event": event.kind.value,
        "key": event.key,
        "at": event.at.isoformat(),
        "kpi": None if kpi is None else {
            "id": kpi.id, "name": kpi.name, "owner": kpi.owner, "team": kpi.team,
            "unit": kpi.unit, "direction": kpi.direction.value,
            "target": kpi.target.value if kpi.target else None,
            "labels": dict(kpi.labels),
        },
        "source": event.source,
        "status": state.status.value if state else None,
        "review": state.review.value if state else None,
        "escalated": state.escalated if state else False,
        "data": dict(event.data),
        "ack": None if notice.ack is None else {
            "author": notice.ack.author, "comment": notice.ack.comment,
        },
        "annotations": [{"at": a.at.isoformat(), "text": a.text} for a in notice.annotations],
        "url": notice.url,
    }  # fmt: skip


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookChannel:
    name = "webhook"

    def __init__(self, *, secret: str | None = None, timeout: float = 10.0) -> None:
        self._secret = secret
        self._timeout = timeout
        self._session: requests.Session | None = None

    def _client(self) -> requests.Session:
        # requests is imported on the first webhook sent: the channel is always built,
        # and a daemon that never sends one should not carry the HTTP client stack
        if self._session is None:
            import requests

            self._session = requests.Session()
            self._session.headers["User-Agent"] = f"kpiwatch/{__version__}"
        return self._session

    def send(self, notice: Notice) -> None:
        import requests

        from kpiwatch.sources.web import shown_url

        session = self._client()
        url = notice.message.target
        body = json.dumps(payload(notice), separators=(",", ":"), default=str).encode()
        headers = {"Content-Type": "application/json"}
        if self._secret:
            headers[SIGNATURE_HEADER] = signature(self._secret, body)
        try:
            response = session.post(url, data=body, headers=headers, timeout=self._timeout)
        except requests.RequestException as exc:  # refused, DNS, timeout: may pass
            raise DeliveryError(f"{shown_url(url)}: {type(exc).__name__}", channel=self.name,
                                retryable=True) from None  # fmt: skip
        if response.status_code < 300:
            return
        retry_after = _retry_after(response.headers.get("Retry-After"))
        retryable = response.status_code in (408, 429) or response.status_code >= 500
        raise DeliveryError(f"{shown_url(url)} answered HTTP {response.status_code}",
                            channel=self.name, retryable=retryable,
                            retry_after=retry_after)  # fmt: skip


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff
