"""Fixtures the integration tests share: a SQLite state store, the fake Slack Web API and
a real SMTP server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from slack_api import SlackApi, slack_api
from smtp_server import SmtpServer, running_smtp

from kpiwatch.store.repository import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A fresh SQLite state store (a file may define its own)."""
    opened = Store.open(f"sqlite:///{tmp_path}/state.db")
    yield opened
    opened.close()


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
