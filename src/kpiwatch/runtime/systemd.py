"""The systemd notification protocol (sd_notify), without libsystemd.

Under ``Type=notify`` systemd sets ``NOTIFY_SOCKET`` to a unix datagram socket:
a path (``/run/systemd/notify``) or, when it starts with ``@``, a name in the
abstract namespace. Each message is newline-separated ``KEY=VALUE`` lines:
``READY=1`` once the daemon serves, ``RELOADING=1`` / ``STOPPING=1`` around a
reload or a stop, ``STATUS=…`` for ``systemctl status`` and ``WATCHDOG=1`` as a
keep-alive when the unit sets ``WatchdogSec=``.

A failed send is logged and ignored: notifications must never stop the daemon.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

import structlog

log = structlog.get_logger("kpiwatch.systemd")


def _address(notify_socket: str) -> str | None:
    """The ``sendto`` address for a ``NOTIFY_SOCKET`` value, or None if unsupported."""
    if notify_socket.startswith("@"):
        return "\0" + notify_socket[1:]  # the abstract namespace
    if notify_socket.startswith("/"):
        return notify_socket
    return None  # e.g. systemd's vsock: addresses, which a daemon on the host never gets


class SystemdNotifier:
    """Sends sd_notify messages to the socket systemd gave this process."""

    def __init__(self, notify_socket: str, *, watchdog_usec: int | None = None) -> None:
        address = _address(notify_socket)
        if address is None:
            raise ValueError(f"unsupported NOTIFY_SOCKET address: {notify_socket!r}")
        self._address = address
        self.notify_socket = notify_socket
        self._watchdog_usec = watchdog_usec

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, pid: int | None = None
    ) -> SystemdNotifier | None:
        """A notifier from ``NOTIFY_SOCKET``, or None when not run by systemd as ``Type=notify``.

        ``WATCHDOG_USEC`` is honoured only when ``WATCHDOG_PID`` is unset or is this
        process (``pid``, default ``os.getpid()``), as ``sd_watchdog_enabled`` does.
        """
        env = os.environ if environ is None else environ
        notify_socket = env.get("NOTIFY_SOCKET", "")
        if not notify_socket:
            return None
        if _address(notify_socket) is None:
            log.warning("NOTIFY_SOCKET not supported: not notifying systemd", value=notify_socket)
            return None
        return cls(
            notify_socket, watchdog_usec=_watchdog_usec(env, os.getpid() if pid is None else pid)
        )

    def notify(self, **fields: str | int) -> bool:
        """Sends one message of ``KEY=VALUE`` lines (keys upper-cased); True if sent."""
        message = "\n".join(f"{key.upper()}={value}" for key, value in fields.items())
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message.encode(), self._address)
        except OSError as exc:
            log.warning("systemd notification failed", error=str(exc), message=message)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """``READY=1``: startup finished (and, after a reload, the reload finished)."""
        if status is None:
            return self.notify(ready=1)
        return self.notify(ready=1, status=status)

    def reloading(self) -> bool:
        """``RELOADING=1`` with ``MONOTONIC_USEC`` (needed by ``Type=notify-reload``).

        Send ``ready()`` when the reload is done.
        """
        return self.notify(
            reloading=1, monotonic_usec=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        )

    def stopping(self) -> bool:
        """``STOPPING=1``: a clean stop has begun."""
        return self.notify(stopping=1)

    def status(self, text: str) -> bool:
        """``STATUS=…``: one line shown by ``systemctl status``."""
        return self.notify(status=" ".join(text.splitlines()))

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: the keep-alive ping for ``WatchdogSec=``."""
        return self.notify(watchdog=1)

    def watchdog_interval(self) -> float | None:
        """Seconds between ``watchdog()`` pings (half of ``WATCHDOG_USEC``), None if off."""
        if self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 2 / 1_000_000


def _watchdog_usec(env: Mapping[str, str], pid: int) -> int | None:
    raw = env.get("WATCHDOG_USEC", "")
    if not raw:
        return None
    watchdog_pid = env.get("WATCHDOG_PID", "")
    try:
        usec = int(raw)
        if watchdog_pid and int(watchdog_pid) != pid:
            return None  # meant for another process (e.g. our parent)
    except ValueError:
        log.warning("invalid WATCHDOG_USEC/WATCHDOG_PID", usec=raw, pid=watchdog_pid)
        return None
    return usec if usec > 0 else None
