"""Fixtures the integration tests share: the fake Slack Web API and a real SMTP server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from slack_api import SlackApi, slack_api
from smtp_server import SmtpServer, running_smtp


@pytest.fixture
def slack() -> Iterator[SlackApi]:
    """A local server speaking the Slack Web API (a file may override it, e.g. its token)."""
    with slack_api() as server:
        yield server


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    """A real SMTP server (aiosmtpd) on a free port."""
    with running_smtp() as server:
        yield server
