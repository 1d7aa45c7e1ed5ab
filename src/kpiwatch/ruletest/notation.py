"""The series notation of rule tests, as promtool's: ``"4 4.2 4.8+0.4x3 _ 6"``.

* a number is one value;
* ``a+bxN`` expands to the N+1 values a, a+b, …, a+N·b; ``a-bxN`` likewise downwards;
* ``_`` is a step without a value; ``_xN`` is N such steps.

Values are computed as ``a + i·b`` (not by repeated addition), so ``0.1+0.1x9``
ends at exactly ``0.1 + 9·0.1``.
"""

from __future__ import annotations

import math
import re

MAX_STEPS = 100_000  # a test series; a typo such as 1+1x1e9 must not eat the memory

_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_EXPANDING = re.compile(rf"(?P<start>{_NUMBER})(?P<sign>[+-])(?P<step>{_NUMBER})x(?P<count>\d+)")
_GAPS = re.compile(r"_(?:x(?P<count>\d+))?")
_SINGLE = re.compile(_NUMBER)


def parse_series(text: str) -> list[float | None]:
    """The values of a series, None for a gap; ValueError naming the bad item."""
    values: list[float | None] = []
    for position, item in enumerate(text.split(), start=1):
        values.extend(_item(item, position))
        if len(values) > MAX_STEPS:
            raise ValueError(f"more than {MAX_STEPS:,} steps")
    if not values:
        raise ValueError("no values: write numbers separated by spaces, e.g. \"4 4.2 5+0.5x3\"")
    return values


def _item(item: str, position: int) -> list[float | None]:
    if gap := _GAPS.fullmatch(item):
        return [None] * (1 if gap["count"] is None else int(gap["count"]))
    if expanding := _EXPANDING.fullmatch(item):
        count = int(expanding["count"])
        if count > MAX_STEPS:
            raise ValueError(f"item {position} {item!r}: more than {MAX_STEPS:,} steps")
        start = float(expanding["start"])
        step = float(expanding["step"]) * (1 if expanding["sign"] == "+" else -1)
        return [_finite(start + i * step, item, position) for i in range(count + 1)]
    if _SINGLE.fullmatch(item):
        return [_finite(float(item), item, position)]
    raise ValueError(
        f"item {position} {item!r} is not a number, a+bxN, a-bxN, _ or _xN"
    )


def _finite(value: float, item: str, position: int) -> float:
    if not math.isfinite(value):
        raise ValueError(f"item {position} {item!r} is not a finite number")
    return value
