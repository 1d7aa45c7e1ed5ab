"""The real Slack and email channels, pointed at the fake Slack Web API and a local SMTP
server: what the in-process pipelines of the integration tests deliver through."""

from __future__ import annotations

from typing import Any

from slack_api import SlackApi
from smtp_server import SmtpServer

from kpiwatch.notify.channels.email import EmailChannel
from kpiwatch.notify.channels.slack import SlackChannel
from kpiwatch.runtime.channels import StoreThreads
from kpiwatch.store.repository import Store


def real_channels(
    store: Store, slack: SlackApi, smtp: SmtpServer, *, slack_timeout: float = 1.0
) -> dict[str, Any]:
    """``{"slack": …, "email": …}``: a bot-token Slack channel keeping its threads in
    ``store``, and plain SMTP from kpiwatch@example.com."""
    return {
        "slack": SlackChannel(token=slack.token, webhook_url=None, api_url=slack.base_url,
                              threads=StoreThreads(store), timeout=slack_timeout),
        "email": EmailChannel(host=smtp.host, port=smtp.port, starttls=False,
                              sender="kpiwatch@example.com", timeout=2.0),
    }  # fmt: skip
