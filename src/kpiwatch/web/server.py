"""The HTTP server inside the daemon: uvicorn on a thread of its own.

The socket is bound here, in the caller's thread, so a taken port is a clear
configuration error at start instead of a log line from a dying thread. Signals
stay with the daemon: uvicorn installs no handlers off the main thread.
"""

from __future__ import annotations

import socket
import threading
import time

import structlog
import uvicorn
from fastapi import FastAPI

from kpiwatch.errors import ConfigError

log = structlog.get_logger("kpiwatch.http")

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0  # requests still running after this are cut off


class WebServer:
    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        self._host = host
        self._socket = _bind(host, port)
        config = uvicorn.Config(
            app,
            log_config=None,  # structlog owns logging; uvicorn must not reconfigure it
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=int(STOP_TIMEOUT),
            server_header=False,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]},
            name="kpiwatch-http", daemon=True,
        )  # fmt: skip

    @property
    def port(self) -> int:
        """The bound port (the one the OS chose when configured as 0)."""
        return int(self._socket.getsockname()[1])

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._socket.close()
                raise ConfigError(f"the HTTP server on {self.url} did not start; see the log")
            time.sleep(0.02)
        log.info("serving HTTP", url=self.url)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(STOP_TIMEOUT + 2)
        self._socket.close()


def _bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"KPIWATCH_HTTP_HOST {host!r} cannot be resolved: {exc}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart without TIME_WAIT
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror}): another kpiwatch or program "
            "holds it; set KPIWATCH_HTTP_PORT (0 picks a free port) or KPIWATCH_HTTP_HOST"
        ) from None
    sock.set_inheritable(True)
    return sock
