"""Which local files rules may read, checked when the rules load and again on every read.

A CSV source's ``path`` must resolve, symbolic links followed, inside the rules
directory or one of the directories of ``KPIWATCH_FILE_ROOTS``, and name a
regular file. Rule files are not trusted to read anything the daemon can: the
value, and any error quoting the file, reach the status board, the API, the log
and the notifications. The kernel's pseudo-filesystems (``/proc``, ``/sys``,
``/dev``) are refused even inside a root: their "regular files" hold the
process environment and its secrets.

:func:`place` (where a path points, or why not) and :func:`kind_refusal` (what
a file may be) are the whole rule; the loader applies them to paths that
exist, :func:`read_file` applies them again when it reads, on the file it
actually opened: a file may be swapped for a symbolic link or a FIFO after the
rules loaded.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# kernel pseudo-filesystems: their files are process state (environ, memory), not data
PSEUDO_FILESYSTEMS = (Path("/proc"), Path("/sys"), Path("/dev"))
_CHUNK = 64 * 1024


class FileRefused(Exception):
    """A path that rules may not read; the message says why (no file content in it)."""


@dataclass(frozen=True)
class FileRoots:
    """The directories rules may read files from, symbolic links resolved."""

    rules_dir: Path
    extra: tuple[Path, ...] = ()

    @classmethod
    def of(cls, rules_dir: Path, extra: Iterable[Path] = ()) -> FileRoots:
        """Roots from the settings' ``rules_dir`` and ``file_roots``, resolved now.

        Resolved once, so a later chdir or a root that is itself a link (a
        Kubernetes ConfigMap mount) compares as the directory it is.
        """
        return cls(_resolved(rules_dir), tuple(_resolved(p) for p in extra))

    @property
    def all(self) -> tuple[Path, ...]:
        return (self.rules_dir, *self.extra)

    def describe(self) -> str:
        """``the rules directory and KPIWATCH_FILE_ROOTS (/srv/rules, /srv/data)``."""
        return (
            "the rules directory and KPIWATCH_FILE_ROOTS "
            f"({', '.join(str(root) for root in self.all)})"
        )


def _resolved(directory: Path) -> Path:
    return directory.expanduser().resolve(strict=False)


def candidate(path: str, base_dir: Path) -> Path:
    """The absolute path a rule's ``path`` names: relative ones are relative to ``base_dir``."""
    return (base_dir.expanduser().absolute() / Path(path).expanduser()).absolute()


def place(path: Path, roots: FileRoots) -> Path:
    """``path`` with every symbolic link resolved, if rules may read there; else FileRefused.

    A path that does not exist (yet) is placed by its text, ``..`` resolved: it
    may appear later, and is refused when read if it is not a regular file then.
    """
    resolved = path.resolve(strict=False)
    shown = repr(str(path)) + (f" (resolves to {str(resolved)!r})" if resolved != path else "")
    if not any(resolved.is_relative_to(root) for root in roots.all):
        raise FileRefused(f"{shown} is outside {roots.describe()}")
    for pseudo in PSEUDO_FILESYSTEMS:
        if resolved.is_relative_to(pseudo):
            raise FileRefused(f"{shown} is in {pseudo}, a kernel pseudo-filesystem, not data")
    return resolved


def kind_refusal(mode: int) -> str | None:
    """Why a file of this ``st_mode`` may not be read, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory"
    if stat.S_ISFIFO(mode):
        return "is a FIFO (named pipe)"  # reading one blocks until a writer comes
    if stat.S_ISSOCK(mode):
        return "is a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device"  # /dev/zero never ends
    return "is not a regular file"


def load_refusal(path: str, base_dir: Path, roots: FileRoots) -> str | None:
    """Why a rule may not name ``path`` (for a load error), or None.

    A file that does not exist yet, or cannot be looked at now, is left to the
    fetch: it may appear, or be made readable, after the rules load.
    """
    named = candidate(path, base_dir)
    try:
        resolved = place(named, roots)
        mode = os.stat(resolved).st_mode
    except FileRefused as exc:
        return str(exc)
    except (OSError, ValueError):  # not there yet, no permission, a NUL in the name
        return None
    refusal = kind_refusal(mode)
    return f"{str(named)!r} {refusal}: name a regular file" if refusal else None


def read_file(path: Path, roots: FileRoots, max_bytes: int) -> bytes:
    """At most ``max_bytes + 1`` bytes of the regular file ``path``, inside ``roots``.

    Raises FileRefused if it is (now) outside the roots or not a regular file,
    OSError if it cannot be read. Never blocks on a FIFO: the file is opened
    non-blocking and refused after fstat; O_NOFOLLOW refuses a last component
    turned into a symbolic link after :func:`place` resolved it, and the path
    of the descriptor actually opened is checked against the roots again.
    """
    resolved = place(path, roots)
    refusal = kind_refusal(os.stat(resolved).st_mode)  # a device is refused before opening it
    if refusal is None:
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(resolved, flags)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                refused = f"{str(path)!r} became a symbolic link while being read"
                raise FileRefused(refused) from None
            raise
        try:
            refusal = kind_refusal(os.fstat(fd).st_mode)
            if refusal is None:
                _check_opened(fd, roots)
                return _read(fd, max_bytes + 1)
        finally:
            os.close(fd)
    raise FileRefused(f"{str(path)!r} {refusal}: name a regular file")


def _check_opened(fd: int, roots: FileRoots) -> None:
    """The opened file must be inside the roots: a directory on the way may have been swapped."""
    try:
        opened = Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:  # no /proc (not Linux): the checks before opening stand
        return
    place(opened, roots)


def _read(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = os.read(fd, min(_CHUNK, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
