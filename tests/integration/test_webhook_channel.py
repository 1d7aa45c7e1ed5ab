"""The webhook channel against a real local HTTP server: JSON body, HMAC signature, errors."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from kpiwatch.config.rules import Kpi
from kpiwatch.errors import DeliveryError
from kpiwatch.model import (
    DeliveryState,
    Event,
    EventKind,
    KpiState,
    OutboxMessage,
    ReviewCadence,
    Status,
)
from kpiwatch.notify.channels.webhook import SIGNATURE_HEADER, WebhookChannel
from kpiwatch.notify.notice import Notice

AT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


class Receiver:
    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                self.send_response(receiver.status)
                if receiver.status == 429:
                    self.send_header("Retry-After", "30")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook?token=s3cret"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    thread = threading.Thread(target=r.server.serve_forever, daemon=True)
    thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()


def _notice(url: str) -> Notice:
    kpi = Kpi.model_validate(
        {
            "id": "churn",
            "name": "Churn <b>",
            "owner": "dana@example.com",
            "direction": "lower_is_better",
            "source": "push",
            "unit": "%",
        }
    )
    event = Event(
        EventKind.STATUS_CHANGED,
        "churn:status_changed:x",
        AT,
        kpi_id="churn",
        data={"from": "green", "to": "red", "value": 6.2},
    )
    message = OutboxMessage(1, event, "webhook", url, DeliveryState.PENDING, 0, AT, AT)
    state = KpiState("churn", Status.RED, AT, ReviewCadence.WEEKLY)
    return Notice(message, kpi, None, state, (), (), None, "http://kpiwatch.test/kpis/churn")


def test_posts_the_event_as_signed_json(receiver: Receiver) -> None:
    WebhookChannel(secret="topsecret").send(_notice(receiver.url))
    [(headers, body)] = receiver.requests
    expected = "sha256=" + hmac.new(b"topsecret", body, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER] == expected
    data = json.loads(body)
    assert data["event"] == "status_changed"
    assert data["kpi"]["name"] == "Churn <b>"
    assert data["status"] == "red"
    assert data["data"]["to"] == "red"
    assert data["url"] == "http://kpiwatch.test/kpis/churn"


def test_unsigned_without_a_secret(receiver: Receiver) -> None:
    WebhookChannel().send(_notice(receiver.url))
    assert SIGNATURE_HEADER not in receiver.requests[0][0]


@pytest.mark.parametrize(
    ("status", "retryable", "retry_after"),
    [(500, True, None), (429, True, 30.0), (404, False, None)],
)
def test_errors_say_whether_a_retry_may_help(
    receiver: Receiver, status: int, retryable: bool, retry_after: float | None
) -> None:
    receiver.status = status
    with pytest.raises(DeliveryError) as caught:
        WebhookChannel().send(_notice(receiver.url))
    assert caught.value.retryable is retryable
    assert caught.value.retry_after == retry_after
    assert "s3cret" not in str(caught.value)


def test_connection_refused_is_retryable() -> None:
    with pytest.raises(DeliveryError) as caught:
        WebhookChannel(timeout=2).send(_notice("http://127.0.0.1:9/hook"))
    assert caught.value.retryable
