"""A scripted HTTP server on 127.0.0.1 for the HTTP sources' tests, stopped at teardown.

Subclass :class:`QuietHandler` for the routes and run a :class:`LocalServer` with
:func:`serving`. (Imported by tests/integration and, through its conftest, by
tests/unit/sources.)
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar


class QuietHandler(BaseHTTPRequestHandler):
    """A handler with :meth:`reply` that logs nothing."""

    default_type = "application/json"

    def reply(self, status: int, body: bytes, content_type: str | None = None) -> None:
        """Send ``body`` with its Content-Type (``default_type`` if not given) and length."""
        self.send_response(status)
        self.send_header("Content-Type", content_type or self.default_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep the test output clean


class LocalServer(ThreadingHTTPServer):
    """A threaded server on a free port of 127.0.0.1."""

    daemon_threads = True
    block_on_close = False  # slow handlers must not hold up the teardown
    # socketserver listens with a backlog of 5: clients connecting at once beyond it wait
    # for a SYN retransmission (1 s), past the short timeouts these tests give sources
    request_queue_size = 64

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.stop = threading.Event()  # set at teardown: slow handlers stop waiting

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (timeouts) breaks the pipe: expected here


S = TypeVar("S", bound=LocalServer)


@contextmanager
def serving(server: S, poll_interval: float = 0.05) -> Iterator[S]:
    """Serve on a thread; on exit release slow handlers, stop and close the server."""
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": poll_interval}, daemon=True
    )
    thread.start()
    try:
        yield server
    finally:
        server.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
