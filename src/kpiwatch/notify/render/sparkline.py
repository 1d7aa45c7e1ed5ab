"""A sparkline: a series drawn with the eight Unicode block characters, for chat messages."""

from __future__ import annotations

import math
from collections.abc import Sequence

BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float], width: int = 20) -> str:
    """The last ``width`` finite values of ``values`` (oldest first) as ``▁▂▃▅▇█``.

    Each bar is scaled between the minimum and maximum shown; a constant series
    is a flat middle line (no change is not "all low"). Non-finite values are
    skipped; no values give ``""``.
    """
    if width < 1:
        raise ValueError(f"sparkline width must be at least 1, got {width!r}")
    shown = [float(v) for v in values if math.isfinite(v)][-width:]
    if not shown:
        return ""
    low, high = min(shown), max(shown)
    if low == high:
        return BARS[len(BARS) // 2 - 1] * len(shown)
    # halves: high - low could overflow to inf for values near the float limits
    span = high / 2 - low / 2
    top = len(BARS) - 1
    return "".join(BARS[round((v / 2 - low / 2) / span * top)] for v in shown)
