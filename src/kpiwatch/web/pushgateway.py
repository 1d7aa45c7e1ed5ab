"""Pushing the exporter's registry to a Prometheus Pushgateway (KPIWATCH_PUSHGATEWAY_URL).

For deployments Prometheus cannot scrape. The push is a PUT, which replaces the
whole group (job="kpiwatch", instance=...): a KPI removed from the rules is
gone from the Pushgateway after the next push, as it is from /metrics.
"""

from __future__ import annotations

import http.client
import urllib.error
from collections.abc import Callable
from urllib.parse import unquote, urlsplit, urlunsplit

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import basic_auth_handler, default_handler, push_to_gateway

from kpiwatch.errors import ConfigError, DeliveryError, redact

log = structlog.get_logger("kpiwatch.pushgateway")

JOB = "kpiwatch"
CHANNEL = "pushgateway"  # the name DeliveryError reports
_BODY_LIMIT = 300  # characters of the Pushgateway's explanation kept in the error

Handler = Callable[[str, str, float | None, list[tuple[str, str]], bytes], Callable[[], None]]


def push_metrics(
    url: str, registry: CollectorRegistry, *, instance: str, timeout: float = 10.0
) -> None:
    """PUT every metric of ``registry`` to the Pushgateway at ``url`` as one group.

    ``url`` may carry basic-auth credentials (``http://user:pass@host:9091``);
    they go in a header, never into the request URL, a log line or an error.
    Raises ConfigError for a URL that cannot be used and DeliveryError (channel
    "pushgateway", retryable unless the Pushgateway refused the data) when the push fails;
    a StoreError from the exporter's collector passes through unchanged.
    """
    if not instance:
        raise ConfigError("pushgateway: the instance label must not be empty")
    gateway, handler = _gateway(url)
    shown = redact(url)
    try:
        push_to_gateway(
            gateway,
            job=JOB,
            registry=registry,
            grouping_key={"instance": instance},
            timeout=timeout,
            handler=handler,
        )
    except urllib.error.HTTPError as exc:
        reason = _body(exc)
        raise DeliveryError(
            f"cannot push metrics to {shown}: HTTP {exc.code} {exc.reason}{reason}",
            channel=CHANNEL,
            retryable=exc.code >= 500 or exc.code == 429,
        ) from exc
    except urllib.error.URLError as exc:  # refused, unknown host, TLS
        raise DeliveryError(
            f"cannot push metrics to {shown}: {exc.reason}", channel=CHANNEL, retryable=True
        ) from exc
    except (OSError, http.client.HTTPException) as exc:  # timeouts, a dropped connection
        raise DeliveryError(
            f"cannot push metrics to {shown}: {exc!r}", channel=CHANNEL, retryable=True
        ) from exc
    log.debug("metrics pushed", url=shown, instance=instance)


def _gateway(address: str) -> tuple[str, Handler]:
    """The URL without credentials, and a handler that sends them as basic auth."""
    try:
        parts = urlsplit(address if "://" in address else f"http://{address}")
        username, password = parts.username, parts.password
        parts.port  # noqa: B018 -- parses the port: a bad one raises ValueError here
    except ValueError as exc:
        raise ConfigError(f"pushgateway: invalid URL {redact(address)!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"pushgateway: invalid URL {redact(address)!r}: expected http(s)://host:port"
        )
    bare = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    if username is None:
        return bare, default_handler

    def with_auth(
        url: str, method: str, timeout: float | None, headers: list[tuple[str, str]],
        data: bytes,
    ) -> Callable[[], None]:  # fmt: skip
        return basic_auth_handler(
            url, method, timeout, headers, data, unquote(username), unquote(password or "")
        )

    return bare, with_auth


def _body(exc: urllib.error.HTTPError) -> str:
    """The Pushgateway's reason for refusing a push (e.g. inconsistent HELP), shortened."""
    try:
        text = exc.read(_BODY_LIMIT + 1).decode("utf-8", "replace").strip()
    except (OSError, http.client.HTTPException):
        return ""
    if len(text) > _BODY_LIMIT:
        text = text[:_BODY_LIMIT] + "…"
    return f": {text}" if text else ""
