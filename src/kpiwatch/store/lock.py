"""One kpiwatch per embedded database: an advisory lock next to the SQLite file.

Two daemons writing the same SQLite file would both evaluate and both notify;
SQLite's own locking would not stop that. ``flock`` is released by the kernel
when the holder exits, even on ``kill -9``, so a crash never leaves a stale lock.
POSIX only (``fcntl``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

from kpiwatch.errors import InstanceLockedError, StoreError
from kpiwatch.store.engine import sqlite_file


class InstanceLock:
    """An exclusive, non-blocking lock on ``<dbfile>.lock`` holding the owner's pid.

    A no-op for server databases and in-memory SQLite, where there is no file
    to share (servers take care of concurrent writers themselves).
    """

    def __init__(self, url: str) -> None:
        database = sqlite_file(url)
        self.path: Path | None = None if database is None else Path(f"{database}.lock")
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise :class:`InstanceLockedError` naming the holder's pid."""
        if self.path is None or self._fd is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # no O_TRUNC: until we hold the lock, the pid inside belongs to the holder
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot create the lock file {self.path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise InstanceLockedError(
                f"another kpiwatch instance (pid {pid}) is already using {self.path}; "
                "stop it first or point KPIWATCH_DATABASE_URL elsewhere"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"cannot lock {self.path}: {exc}") from exc
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Give the lock up; the file stays (deleting it would race a new owner)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    close = release

    def __enter__(self) -> InstanceLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"
