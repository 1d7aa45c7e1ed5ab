"""A YAML value as a message shows it: close to how it was written, never a Python repr.

YAML gives rule checks dates, times, bytes, nulls and nested lists; ``repr`` would echo
them as ``datetime.date(2000, 1, 1)`` or ``None``. Here they read ``2000-01-01`` and
``null``, collections in flow style (``[2000-01-01, 5m]``), text quoted, and anything
else by its kind only: an object's repr may carry a memory address.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import date, time, timedelta
from typing import Any

from kpiwatch.config.durations import format_duration

LIMIT = 60  # a value can be a whole document: messages show its start


def written(value: Any, limit: int = LIMIT) -> str:
    """``value`` for a message, shortened to about ``limit`` characters."""
    text = _render(value, limit)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _render(value: Any, budget: int) -> str:
    if budget <= 0:  # deep (or self-referencing, ``&a [*a]``) collections stop here
        return "..."
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value[: budget + 1])  # quoted, so the edges of the text stay visible
    if isinstance(value, int):  # str() refuses ints of over 4,300 digits
        return str(value) if value.bit_length() < 200 else "a number of over 60 digits"
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        return repr(value) if math.isfinite(value) else ("-.inf" if value < 0 else ".inf")
    if isinstance(value, date | time):  # datetime is a date
        return value.isoformat()
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, bytes | bytearray):  # !!binary
        return f"binary data ({len(value)} bytes)"
    if isinstance(value, dict):
        pairs = ((k, v) for k, v in value.items())
        return _flow("{", "}", pairs, budget)
    if isinstance(value, list | tuple | set | frozenset):
        return _flow("[", "]", value, budget)
    return f"a value of type {type(value).__name__}"


def _flow(opening: str, closing: str, items: Iterable[Any], budget: int) -> str:
    """Items in flow style until the budget is spent; mapping items come as pairs."""
    parts: list[str] = []
    left = budget - 2
    for item in items:
        if left <= 0:
            parts.append("...")
            break
        if opening == "{":
            key = _render(item[0], left)
            part = f"{key}: {_render(item[1], left - len(key) - 2)}"
        else:
            part = _render(item, left)
        parts.append(part)
        left -= len(part) + 2
    return opening + ", ".join(parts) + closing
