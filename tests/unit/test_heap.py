"""heap.trim gives freed C-heap pages back to the system."""

from __future__ import annotations

import platform

import pytest

from kpiwatch import heap


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_trim_returns_the_free_pages_a_burst_left_in_the_heap() -> None:
    # 4 KiB objects come from malloc's heap (not pymalloc, not mmap); keeping one in
    # sixteen alive leaves the freed pages between them, which free() keeps
    blocks = [bytes(4000) + i.to_bytes(4, "little") for i in range(40_000)]  # ~160 MB
    kept = blocks[::16]
    del blocks
    before = _rss_kib()
    heap.trim()
    after = _rss_kib()
    assert before - after > 60_000, (before, after)  # KiB: most of the ~150 MB freed
    assert len(kept) == 2_500

