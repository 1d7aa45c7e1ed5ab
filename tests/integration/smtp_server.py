"""A real SMTP server for tests: aiosmtpd on a free port of 127.0.0.1.

``SmtpServer`` keeps every message it accepts (parsed with the default
policy), can offer STARTTLS or implicit TLS with a trustme certificate, can
require AUTH, can answer chosen recipients with a scripted reply (``451 ...``),
and can be stopped (connections refused) and started again on the same port.

    with running_smtp(starttls=True, users={"kw": "pw"}) as server:
        channel = EmailChannel(host=server.host, port=server.port, username="kw",
                               password="pw", ssl_context=server.client_context())

(Imported by tests/integration; the ``smtp_server`` fixture is the plain case.)
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

HOST = "127.0.0.1"


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self._server = server

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        reply = self._server.rcpt_replies.get(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        parsed = message_from_bytes(raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        with self._server.lock:
            self._server.messages.append(parsed)
            self._server.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 Message accepted"


class SmtpServer:
    """An aiosmtpd server; ``messages`` and ``envelopes`` grow as mail arrives."""

    def __init__(
        self,
        *,
        starttls: bool = False,
        implicit_tls: bool = False,
        users: dict[str, str] | None = None,
        auth_require_tls: bool = False,
    ) -> None:
        self.host = HOST
        self.port = _free_port()
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.rcpt_replies: dict[str, str] = {}  # address -> full reply, e.g. "550 5.1.1 no"
        self.logins: list[str] = []
        self.lock = threading.Lock()
        self.ca = trustme.CA()
        self._cert = self.ca.issue_cert(HOST, "localhost")
        self._starttls = starttls
        self._implicit_tls = implicit_tls
        self._users = users
        self._auth_require_tls = auth_require_tls
        self._controller: Controller | None = None

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts this server's CA (and nothing else)."""
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    def _server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._cert.configure_cert(context)
        return context

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        users = self._users or {}
        if isinstance(auth_data, LoginPassword):
            login, password = auth_data.login.decode(), auth_data.password.decode()
            if users.get(login) == password:
                self.logins.append(login)
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    def start(self) -> None:
        kwargs: dict[str, Any] = {}
        if self._starttls:
            kwargs.update(tls_context=self._server_context(), require_starttls=True)
        if self._implicit_tls:
            kwargs["ssl_context"] = self._server_context()
        if self._users is not None:
            kwargs.update(authenticator=self._authenticate,
                          auth_require_tls=self._auth_require_tls)  # fmt: skip
        self._controller = Controller(_Handler(self), hostname=self.host, port=self.port,
                                      ready_timeout=5.0, **kwargs)  # fmt: skip
        self._controller.start()

    def stop(self) -> None:
        """Stop listening: connections are refused until :meth:`start`."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def restart(self) -> None:
        self.stop()
        self.start()


def _free_port() -> int:
    # aiosmtpd's Controller cannot listen on port 0 (it connects to its port to check it is up)
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_smtp(**options: Any) -> Iterator[SmtpServer]:
    """A started :class:`SmtpServer` (options as its constructor), stopped afterwards."""
    server = SmtpServer(**options)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """A plain SMTP server (no TLS, no AUTH) that keeps what it receives."""
    with running_smtp() as server:
        yield server
