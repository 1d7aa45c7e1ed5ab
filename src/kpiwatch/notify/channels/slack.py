"""The Slack channel: a bot token (chat.postMessage, threads) or one incoming webhook.

With a bot token, a ``status_changed`` starts an episode as a top-level message;
the episode's later events (escalated, de-escalated, review due, reminders)
reply in its thread, found through a :class:`ThreadBook` (the store). An
incoming webhook posts to its one channel and cannot thread.

Like every channel this one never retries: slack-sdk's retry handlers are
disabled, and failures become ``DeliveryError(retryable=...)`` for the outbox.
No error message carries the token or the webhook URL (itself a secret).
"""

from __future__ import annotations

import socket
from datetime import datetime
from typing import Any, Protocol
from urllib.error import URLError

import structlog
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.webhook import WebhookClient

from kpiwatch.errors import DeliveryError
from kpiwatch.model import EventKind
from kpiwatch.notify.notice import Notice
from kpiwatch.notify.render.slack import slack_message

DEFAULT_API_URL = "https://slack.com/api/"

# API errors a retry may cure; every other ``ok: false`` is permanent (bad channel, blocks...)
_RETRYABLE_ERRORS = frozenset(
    {"ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable",
     "request_timeout"}
)  # fmt: skip
_BAD_AUTH = frozenset(
    {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired"}
)
_NO_THREAD = frozenset({"thread_not_found", "invalid_thread_ts"})


class ThreadBook(Protocol):
    """Where the ``ts`` of each episode's first message is kept, per KPI and Slack channel."""

    def get(self, kpi_id: str, channel: str, episode_since: datetime) -> str | None:
        """The ``ts`` of the episode's top-level message, or None."""
        ...

    def put(self, kpi_id: str, channel: str, episode_since: datetime, ts: str) -> None:
        """Remember ``ts`` as the episode's top-level message."""
        ...


class SlackChannel:
    """Delivers notices to Slack; see the module docstring."""

    name = "slack"

    def __init__(
        self,
        *,
        token: str | None,
        webhook_url: str | None,
        api_url: str = DEFAULT_API_URL,
        threads: ThreadBook,
        timeout: float = 10.0,
    ) -> None:
        if (token is None) == (webhook_url is None):
            raise ValueError("give exactly one of a Slack bot token or an incoming webhook URL")
        self._threads = threads
        self._client: WebClient | None = None
        self._webhook: WebhookClient | None = None
        self._log = structlog.get_logger("kpiwatch.slack")
        # retry_handlers=[]: only the outbox retries (slack-sdk retries connection errors)
        if token is not None:
            base_url = api_url if api_url.endswith("/") else api_url + "/"
            self._client = WebClient(
                token=token, base_url=base_url, timeout=int(timeout), retry_handlers=[]
            )
            self._client.timeout = timeout  # type: ignore[assignment]  # int in stubs, float ok
        else:
            assert webhook_url is not None
            self._webhook = WebhookClient(webhook_url, timeout=int(timeout), retry_handlers=[])
            self._webhook.timeout = timeout  # type: ignore[assignment]

    # ------------------------------------------------------------ public

    def verify(self) -> str:
        """Check the token with ``auth.test``; the workspace and bot name, or ``"webhook"``."""
        if self._client is None:
            return "webhook"  # an incoming webhook has nothing to test without posting
        try:
            response = self._client.auth_test()
        except SlackApiError as exc:
            error = _api_error(exc)
            if error in _BAD_AUTH:
                raise DeliveryError(
                    f"the Slack bot token was refused ({error}): check KPIWATCH_SLACK_TOKEN",
                    channel=self.name,
                    retryable=False,
                ) from None
            raise _from_api_error(exc, "auth.test") from None
        except Exception as exc:
            raise _from_transport_error(exc, "auth.test") from None
        team = response.get("team") or "?"
        user = response.get("user") or "?"
        return f"{team} (as {user})"

    def send(self, notice: Notice) -> None:
        """Post one message, threaded under its episode when one is known."""
        message = slack_message(notice)
        if self._webhook is not None:
            self._send_webhook(message)
            return
        target = notice.message.target
        event = notice.event
        kpi_id = event.kpi_id
        if kpi_id is None:  # source events have no episode
            self._post(target, message, None)
            return
        if event.kind is EventKind.STATUS_CHANGED:
            ts = self._post(target, message, None)
            self._remember(kpi_id, target, event.at, ts)
            return
        since = _episode(notice)
        thread_ts = self._threads.get(kpi_id, target, since)
        if thread_ts is None:
            self._post(target, message, None)
            return
        try:
            self._post(target, message, thread_ts)
        except _ThreadGone:
            self._post(target, message, None)  # the first message was deleted: post anew

    # ------------------------------------------------------------ bot token

    def _post(self, target: str, message: dict[str, Any], thread_ts: str | None) -> str:
        assert self._client is not None
        try:
            response = self._client.chat_postMessage(
                channel=target,
                text=message["text"],
                blocks=message["blocks"],
                thread_ts=thread_ts,
                unfurl_links=False,  # no preview card of the status board under every alert
                unfurl_media=False,
            )
        except SlackApiError as exc:
            if thread_ts is not None and _api_error(exc) in _NO_THREAD:
                raise _ThreadGone from None
            raise _from_api_error(exc, f"chat.postMessage to {target!r}") from None
        except Exception as exc:
            raise _from_transport_error(exc, f"chat.postMessage to {target!r}") from None
        return str(response.get("ts") or "")

    def _remember(self, kpi_id: str, target: str, since: datetime, ts: str) -> None:
        if not ts:
            return
        try:
            self._threads.put(kpi_id, target, since, ts)
        except Exception as exc:
            # the message is out: raising would make the outbox post it again. The
            # episode's later events then post top-level instead of in the thread.
            self._log.warning("slack thread not recorded", kpi=kpi_id, to=target, error=str(exc))

    # ------------------------------------------------------------ webhook

    def _send_webhook(self, message: dict[str, Any]) -> None:
        assert self._webhook is not None
        try:
            response = self._webhook.send(
                text=message["text"],
                blocks=message["blocks"],
                unfurl_links=False,
                unfurl_media=False,
            )
        except Exception as exc:
            raise _from_transport_error(exc, "incoming webhook") from None
        status = response.status_code
        if status == 200:
            return
        body = _short(response.body)
        retry_after = _retry_after(response.headers) if status == 429 else None
        raise DeliveryError(
            f"incoming webhook answered HTTP {status}: {body}",
            channel=self.name,
            retryable=status == 429 or status >= 500,
            retry_after=retry_after,
        )


class _ThreadGone(Exception):
    """The thread to reply in no longer exists."""


def _api_error(exc: SlackApiError) -> str:
    data = getattr(exc.response, "data", None)
    if isinstance(data, dict):
        return str(data.get("error") or "unknown_error")
    return "unknown_error"


def _from_api_error(exc: SlackApiError, what: str) -> DeliveryError:
    """Slack answered: 429 and 5xx are worth a retry, an API error (``ok: false``) is not."""
    status = int(getattr(exc.response, "status_code", 0) or 0)
    error = _api_error(exc)
    headers = getattr(exc.response, "headers", None) or {}
    if status == 429 or error in ("ratelimited", "rate_limited"):
        return DeliveryError(
            f"{what}: rate limited by Slack",
            channel="slack",
            retryable=True,
            retry_after=_retry_after(headers),
        )
    if status >= 500:
        return DeliveryError(f"{what}: Slack answered HTTP {status}", channel="slack",
                             retryable=True)  # fmt: skip
    if error in _BAD_AUTH:
        hint = "the bot token was refused: check KPIWATCH_SLACK_TOKEN"
        return DeliveryError(f"{what}: {error} ({hint})", channel="slack", retryable=False)
    if error in ("not_in_channel", "channel_not_found"):
        hint = "invite the kpiwatch app to the channel, or fix the team's slack: channel"
        return DeliveryError(f"{what}: {error} ({hint})", channel="slack", retryable=False)
    return DeliveryError(f"{what}: {error}", channel="slack", retryable=error in _RETRYABLE_ERRORS)


def _from_transport_error(exc: Exception, what: str) -> DeliveryError:
    """No answer: connection refused, reset, DNS or timeout, all worth a retry."""
    if isinstance(exc, TimeoutError | socket.timeout):
        reason = "timed out"
    elif isinstance(exc, URLError):
        reason = "timed out" if isinstance(exc.reason, TimeoutError) else _short(exc.reason)
    elif isinstance(exc, OSError | SlackClientError):
        reason = f"{type(exc).__name__}: {_short(exc)}"
    else:
        raise exc  # a bug, not the network: let it show
    return DeliveryError(f"{what}: {reason}", channel="slack", retryable=True)


def _retry_after(headers: Any) -> float | None:
    """The ``Retry-After`` header in seconds, whatever its case; None when absent or odd."""
    for key, value in dict(headers).items():
        if str(key).lower() == "retry-after":
            raw = value[0] if isinstance(value, list | tuple) and value else value
            try:
                seconds = float(str(raw).strip())
            except ValueError:
                return None
            return seconds if seconds >= 0 else None
    return None


def _short(value: object, limit: int = 200) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _episode(notice: Notice) -> datetime:
    """The episode an event belongs to: the one it was raised in, not the one now.

    A status change starts its own; other events carry their episode's start in
    ``data["since"]``; older rows without it fall back to the current episode.
    """
    event = notice.event
    if event.kind is EventKind.STATUS_CHANGED:
        return event.at
    since = event.data.get("since")
    if isinstance(since, str):
        return datetime.fromisoformat(since)
    return notice.state.since if notice.state is not None else event.at
