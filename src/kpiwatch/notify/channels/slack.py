"""The Slack channel: a bot token (chat.postMessage, threads) or one incoming webhook.

With a bot token, each non-green episode is one conversation: its first
message (a ``status_changed``) is the thread's parent; the episode's later
events (escalated, de-escalated, review due) reply in its thread, found through
a :class:`ThreadBook` (the store); the recovery replies there too, broadcast to
the channel. After each reply the parent is edited (``chat.update``) to show
where the episode stands ("⏫ escalated to weekly reviews", "✅ resolved after
3d 4h", who acknowledged it). The reply is the delivery; the edit is best
effort, logged when it fails, so it can neither lose nor repeat a message.
An incoming webhook posts to its one channel and can neither thread nor edit.

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
from kpiwatch.model import EventKind, SlackThread, Status
from kpiwatch.notify.facts import closed_episode, episode_since
from kpiwatch.notify.notice import Notice
from kpiwatch.notify.render.slack import episode_line, slack_message, with_episode_line

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
    """Where each episode's thread is kept, per KPI and Slack channel."""

    def get(self, kpi_id: str, channel: str, episode_since: datetime) -> SlackThread | None:
        """The episode's thread (its parent's ``ts`` and message), or None."""
        ...

    def put(
        self, kpi_id: str, channel: str, episode_since: datetime, thread: SlackThread
    ) -> None:
        """Remember ``thread`` as the episode's."""
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
        """Post one message, in its episode's thread when one is known; see the module doc."""
        message = slack_message(notice)
        if self._webhook is not None:
            self._send_webhook(message)
            return
        target = notice.message.target
        kpi_id = notice.event.kpi_id
        if kpi_id is None:  # source events have no episode
            self._post(target, message, None)
            return
        if notice.event.kind is EventKind.STATUS_CHANGED:
            self._send_change(notice, kpi_id, target, message)
            return
        since = episode_since(notice.event)
        thread = self._threads.get(kpi_id, target, since)
        if self._reply(target, message, thread) is not None:
            assert thread is not None
            self._edit(target, thread, notice, since)

    def _send_change(
        self, notice: Notice, kpi_id: str, target: str, message: dict[str, Any]
    ) -> None:
        """A status change opens its episode's thread, or, to green, closes the last one."""
        event = notice.event
        closed = closed_episode(event)
        old = self._threads.get(kpi_id, target, closed) if closed is not None else None
        green = event.data.get("to") == Status.GREEN.value
        if green and old is None:  # no thread to close: its own message hosts the episode
            ts = self._post(target, message, None)
            self._remember(kpi_id, target, event.at, SlackThread(ts))
            return
        if green:
            assert old is not None
            assert closed is not None
            # the recovery is the closed episode's last word, broadcast so the channel sees it
            if self._reply(target, message, old, broadcast=True) is not None:
                # the green episode's follow-ups (de-escalation, reviews) go on in this thread;
                # no parent: the closed episode's parent keeps its "resolved" line
                self._remember(kpi_id, target, event.at, SlackThread(old.ts))
                self._edit(target, old, notice, closed)
            return
        ts, channel_id = self._chat_post(target, message)
        parent = {"channel": channel_id, "text": message["text"], "blocks": message["blocks"]}
        self._remember(kpi_id, target, event.at, SlackThread(ts, parent))
        if old is not None and closed is not None:  # yellow -> red: the old thread says so
            self._edit(target, old, notice, closed)

    # ------------------------------------------------------------ bot token

    def _reply(
        self,
        target: str,
        message: dict[str, Any],
        thread: SlackThread | None,
        *,
        broadcast: bool = False,
    ) -> str | None:
        """Reply in ``thread``; top-level when there is none or it was deleted.

        The ``ts`` of the reply, or None when it went out top-level (nothing to edit).
        """
        if thread is None:
            self._post(target, message, None)
            return None
        try:
            return self._post(target, message, thread.ts, broadcast=broadcast)
        except _ThreadGone:
            self._post(target, message, None)  # the first message was deleted: post anew
            return None

    def _post(
        self,
        target: str,
        message: dict[str, Any],
        thread_ts: str | None,
        *,
        broadcast: bool = False,
    ) -> str:
        return self._chat_post(target, message, thread_ts, broadcast=broadcast)[0]

    def _chat_post(
        self,
        target: str,
        message: dict[str, Any],
        thread_ts: str | None = None,
        *,
        broadcast: bool = False,
    ) -> tuple[str, str]:
        """chat.postMessage; the message's ``ts`` and its channel's ID (chat.update needs it)."""
        assert self._client is not None
        extra: dict[str, Any] = {"reply_broadcast": True} if broadcast and thread_ts else {}
        try:
            response = self._client.chat_postMessage(
                channel=target,
                text=message["text"],
                blocks=message["blocks"],
                thread_ts=thread_ts,
                unfurl_links=False,  # no preview card of the status board under every alert
                unfurl_media=False,
                **extra,
            )
        except SlackApiError as exc:
            if thread_ts is not None and _api_error(exc) in _NO_THREAD:
                raise _ThreadGone from None
            raise _from_api_error(exc, f"chat.postMessage to {target!r}") from None
        except Exception as exc:
            raise _from_transport_error(exc, f"chat.postMessage to {target!r}") from None
        return str(response.get("ts") or ""), str(response.get("channel") or target)

    def _edit(self, target: str, thread: SlackThread, notice: Notice, episode: datetime) -> None:
        """Show the episode's state on its parent; best effort (the reply was the delivery).

        Raising here would make the outbox send the reply again, so a failure,
        a rate limit included, is only logged; the next follow-up edits anew.
        """
        if thread.parent is None or self._client is None:
            return
        edited = with_episode_line(thread.parent, episode_line(notice, episode))
        channel = str(thread.parent.get("channel") or target)
        try:
            self._client.chat_update(
                channel=channel, ts=thread.ts, text=edited["text"], blocks=edited["blocks"]
            )
        except SlackApiError as exc:
            error = _from_api_error(exc, f"chat.update in {target!r}")
            self._log.warning("slack parent not updated", kpi=notice.event.kpi_id, to=target,
                              error=str(error))  # fmt: skip
        except Exception as exc:
            error = _from_transport_error(exc, f"chat.update in {target!r}")
            self._log.warning("slack parent not updated", kpi=notice.event.kpi_id, to=target,
                              error=str(error))  # fmt: skip

    def _remember(self, kpi_id: str, target: str, since: datetime, thread: SlackThread) -> None:
        if not thread.ts:
            return
        try:
            self._threads.put(kpi_id, target, since, thread)
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
