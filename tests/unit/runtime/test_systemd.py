"""sd_notify messages reach a real unix datagram socket, by path or in the abstract namespace."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kpiwatch.runtime.systemd import SystemdNotifier


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(2)
        yield str(path), sock


def _received(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n"))


def test_from_env_without_notify_socket_is_none() -> None:
    assert SystemdNotifier.from_env({}) is None
    assert SystemdNotifier.from_env({"NOTIFY_SOCKET": ""}) is None


def test_unsupported_address_is_none() -> None:
    assert SystemdNotifier.from_env({"NOTIFY_SOCKET": "vsock:2:1234"}) is None
    with pytest.raises(ValueError, match="unsupported"):
        SystemdNotifier("relative/path")


def test_messages_over_a_path_socket(path_socket: tuple[str, socket.socket]) -> None:
    path, sock = path_socket
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": path})
    assert notifier is not None

    assert notifier.ready()
    assert _received(sock) == {"READY": "1"}
    assert notifier.ready(status="watching 10 KPIs")
    assert _received(sock) == {"READY": "1", "STATUS": "watching 10 KPIs"}
    assert notifier.status("two\nlines")
    assert _received(sock) == {"STATUS": "two lines"}
    assert notifier.watchdog()
    assert _received(sock) == {"WATCHDOG": "1"}
    assert notifier.stopping()
    assert _received(sock) == {"STOPPING": "1"}
    assert notifier.reloading()
    reloading = _received(sock)
    assert reloading["RELOADING"] == "1"
    assert int(reloading["MONOTONIC_USEC"]) > 0


@pytest.mark.skipif(
    not hasattr(socket, "AF_UNIX") or os.uname().sysname != "Linux",
    reason="the abstract namespace is Linux-only",
)
def test_messages_over_an_abstract_socket() -> None:
    name = f"kpiwatch-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": "@" + name})
        assert notifier is not None
        assert notifier.ready()
        assert _received(sock) == {"READY": "1"}


def test_a_missing_socket_is_logged_not_raised(tmp_path: Path) -> None:
    notifier = SystemdNotifier(str(tmp_path / "gone"))
    assert notifier.ready() is False


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    env = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000"}
    notifier = SystemdNotifier.from_env(env)
    assert notifier is not None
    assert notifier.watchdog_interval() == 15.0


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "nonsense"}, None),
        ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "4242"}, 5.0),
        ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}, None),  # another process's
    ],
)
def test_watchdog_pid_is_respected(extra: dict[str, str], expected: float | None) -> None:
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": "/x", **extra}, pid=4242)
    assert notifier is not None
    assert notifier.watchdog_interval() == expected
