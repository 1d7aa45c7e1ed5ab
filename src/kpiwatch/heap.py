"""Giving the C heap's free memory back to the system after a burst of allocations."""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable


def trim() -> None:
    """Return the free pages of the C library's heap to the system (glibc's
    ``malloc_trim``; elsewhere nothing happens).

    A load of 10,000 rules builds and drops tens of MiB of scratch objects (the YAML
    or cached JSON trees): glibc keeps the freed pages, so the process's RSS stays at
    the load's peak for good. Trimming after it gave back 10 to 25 MiB (issue 15,
    ``bench/bench_load.py``); it takes a few milliseconds.
    """
    malloc_trim = _malloc_trim()
    if malloc_trim is not None:
        malloc_trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):  # musl, macOS, Windows: no such function
        return None
