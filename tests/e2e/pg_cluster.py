"""A private PostgreSQL server for tests that stop and start it under a daemon.

The machine's shared server is not ours to restart, so this runs Debian's
PostgreSQL binaries (``initdb``, ``pg_ctl``) on a data directory of its own and
a free port. As root (CI), the server runs as the ``postgres`` user, which
``initdb`` requires.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def _bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresCluster:
    """One stopped-or-running server: :meth:`stop`, :meth:`start`, :attr:`url`."""

    def __init__(self, bindir: Path, datadir: Path, port: int, user: str | None) -> None:
        self._bindir = bindir
        self.datadir = datadir
        self.port = port
        self._user = user  # run as this user (root cannot run PostgreSQL)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> None:
        command = [str(self._bindir / args[0]), *args[1:]]
        if self._user is not None:
            command = ["runuser", "-u", self._user, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                check=False)  # fmt: skip
        if result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed: {result.stdout}{result.stderr}")

    def init(self) -> None:
        self._run("initdb", "-A", "trust", "-U", "postgres", "-D", str(self.datadir))

    def start(self) -> None:
        options = f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.datadir), "-o", options, "-l",
                  str(self.datadir / "server.log"), "-w", "-t", "30", "start")  # fmt: skip

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "-t", "30", "stop")


@contextmanager
def private_postgres() -> Iterator[PostgresCluster]:
    """A fresh server on a free port, removed afterwards; skips (fails under CI)
    where PostgreSQL's server binaries are not installed."""
    bindir = _bindir()
    if bindir is None:
        message = "PostgreSQL server binaries (pg_ctl, initdb) are not installed"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set, so this test must run: {message}")
        pytest.skip(message)
    user: str | None = None
    if os.geteuid() == 0:
        user = "postgres"
        pwd.getpwnam(user)  # KeyError: no such user, a broken install
    root = Path(tempfile.mkdtemp(prefix="kpiwatch-pg-"))
    datadir = root / "data"
    datadir.mkdir()
    if user is not None:
        entry = pwd.getpwnam(user)
        for path in (root, datadir):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    cluster = PostgresCluster(bindir, datadir, _free_port(), user)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        with contextlib.suppress(AssertionError):  # already stopped
            cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
