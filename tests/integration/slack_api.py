"""A local Slack Web API on 127.0.0.1 for tests: auth.test, chat.postMessage, chat.update,
a webhook.

    with slack_api() as slack:
        slack.fail("chat.postMessage", Fault(status=429, retry_after=7))
        channel = SlackChannel(token=TOKEN, webhook_url=None, api_url=slack.base_url, ...)
        ...
        assert slack.calls[0]["channel"] == "#growth"

Faults are queued per method (``auth.test``, ``chat.postMessage``, ``chat.update``,
``webhook``) and each answers one call, in order; calls without a queued fault succeed.
Every request, faulty or not, is recorded in :attr:`SlackApi.calls`.

As Slack does, chat.postMessage takes a channel name and answers with the
channel's ID (``#growth`` -> ``CGROWTH``), and chat.update wants that ID and the
``ts`` of a message posted there (else ``channel_not_found`` / ``message_not_found``).
(Imported by tests/integration, whose directory pytest puts on ``sys.path``.)
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from local_http import LocalServer, QuietHandler, serving

WEBHOOK_PATH = "/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX"


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour: an HTTP status, an API error, and/or a delay first."""

    status: int = 200
    error: str | None = None  # 200 {"ok": false, "error": ...} (or a webhook's text body)
    retry_after: float | None = None  # a Retry-After header
    delay: float = 0.0  # seconds before answering (client timeouts)


class _Handler(QuietHandler):
    server: SlackApi
    call: dict[str, Any]

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode()
        if self.path.startswith("/api/"):
            method = self.path[len("/api/") :].split("?")[0]
        elif self.path == WEBHOOK_PATH:
            method = "webhook"
        else:
            self.reply(404, b"no_service", "text/plain")
            return
        body = _parse(raw, self.headers.get("Content-Type", ""))
        self.call = self.server.record(method, body, self.headers.get("Authorization"))
        fault = self.server.next_fault(method)
        if fault is not None and fault.delay and self.server.stop.wait(fault.delay):
            return  # tearing down
        if method == "webhook":
            self._webhook(fault)
        else:
            self._api(method, body, fault)

    def _api(self, method: str, body: dict[str, Any], fault: Fault | None) -> None:
        if fault is not None and (fault.status != 200 or fault.error):
            self._fault(fault, {"ok": False, "error": fault.error or "internal_error"})
            return
        if self.headers.get("Authorization") != f"Bearer {self.server.token}":
            self._json(200, {"ok": False, "error": "invalid_auth"})
        elif method == "auth.test":
            self._json(200, {"ok": True, "team": "Acme", "user": "kpiwatch", "bot_id": "B1"})
        elif method == "chat.postMessage":
            ts = self.call["ts"] = self.server.next_ts()  # recorded: tests compare thread_ts
            channel = channel_id(str(body.get("channel")))
            self.server.posted(channel, ts)
            self._json(200, {"ok": True, "channel": channel, "ts": ts})
        elif method == "chat.update":
            channel, ts = str(body.get("channel")), str(body.get("ts"))
            error = self.server.editable(channel, ts)
            if error is None:
                self._json(200, {"ok": True, "channel": channel, "ts": ts})
            else:
                self._json(200, {"ok": False, "error": error})
        else:
            self._json(200, {"ok": False, "error": "unknown_method"})

    def _webhook(self, fault: Fault | None) -> None:
        if fault is not None and (fault.status != 200 or fault.error):
            self._fault(fault, None)
            return
        self.reply(200, b"ok", "text/plain")

    def _fault(self, fault: Fault, api_body: dict[str, Any] | None) -> None:
        if api_body is not None and fault.status == 200:
            self._json(200, api_body)
            return
        text = (fault.error or "error").encode()
        if api_body is not None and fault.status == 429:
            text = json.dumps({"ok": False, "error": "ratelimited"}).encode()
        self.send_response(fault.status)
        self.send_header("Content-Type", "application/json" if text[:1] == b"{" else "text/plain")
        self.send_header("Content-Length", str(len(text)))
        if fault.retry_after is not None:
            self.send_header("Retry-After", f"{fault.retry_after:g}")
        self.end_headers()
        self.wfile.write(text)

    def _json(self, status: int, data: dict[str, Any]) -> None:
        self.reply(status, json.dumps(data).encode(), "application/json")


def channel_id(name: str) -> str:
    """The fake ID of a channel: ``#growth`` -> ``CGROWTH``; an ID stays itself."""
    if name.startswith("C") and name.isupper():
        return name
    return "C" + "".join(c for c in name if c.isalnum()).upper()


def _parse(raw: str, content_type: str) -> dict[str, Any]:
    """JSON bodies as sent by the webhook; form bodies (slack-sdk's default) with JSON values."""
    if "json" in content_type:
        return dict(json.loads(raw or "{}"))
    body: dict[str, Any] = dict(parse_qsl(raw))
    if "blocks" in body:  # slack-sdk sends blocks as a JSON string in a form field
        body["blocks"] = json.loads(body["blocks"])
    return body


class SlackApi(LocalServer):
    """The server; :attr:`calls` holds each request's method, body fields and Authorization."""

    def __init__(self, token: str = "xoxb-test-token") -> None:
        super().__init__(_Handler)
        self.token = token
        self.calls: list[dict[str, Any]] = []
        self._faults: dict[str, list[Fault]] = {}
        self._lock = threading.Lock()
        self._ts = itertools.count(1)
        self._messages: set[tuple[str, str]] = set()  # (channel ID, ts) of posted messages

    @property
    def base_url(self) -> str:
        """The Web API root, as for KPIWATCH_SLACK_API_URL (ends in ``/api/``)."""
        return f"{super().base_url}/api/"

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{WEBHOOK_PATH}"

    def fail(self, method: str, *faults: Fault) -> None:
        """Queue faults for the next calls of ``method`` (``webhook`` for the webhook)."""
        with self._lock:
            self._faults.setdefault(method, []).extend(faults)

    def next_fault(self, method: str) -> Fault | None:
        with self._lock:
            queue = self._faults.get(method)
            return queue.pop(0) if queue else None

    def next_ts(self) -> str:
        return f"1717243200.{next(self._ts):06d}"

    def record(
        self, method: str, body: dict[str, Any], authorization: str | None
    ) -> dict[str, Any]:
        # "received": when it arrived (monotonic), for tests that kill a sender mid-send
        call = {"method": method, "authorization": authorization, **body,
                "received": time.monotonic()}  # fmt: skip
        with self._lock:
            self.calls.append(call)
        return call

    def posted(self, channel: str, ts: str) -> None:
        with self._lock:
            self._messages.add((channel, ts))

    def editable(self, channel: str, ts: str) -> str | None:
        """None when chat.update may edit ``ts`` in ``channel``; else Slack's error."""
        with self._lock:
            if not any(c == channel for c, _ in self._messages):
                return "channel_not_found"  # a name instead of the ID lands here
            return None if (channel, ts) in self._messages else "message_not_found"

    def updates(self) -> list[dict[str, Any]]:
        """The chat.update calls, oldest first (the failed ones too)."""
        with self._lock:
            return [c for c in self.calls if c["method"] == "chat.update"]

    def posts(self) -> list[dict[str, Any]]:
        """The chat.postMessage calls, oldest first."""
        with self._lock:
            return [c for c in self.calls if c["method"] == "chat.postMessage"]


@contextmanager
def slack_api(token: str = "xoxb-test-token") -> Iterator[SlackApi]:
    """A running :class:`SlackApi`, stopped on exit."""
    with serving(SlackApi(token)) as server:
        yield server
