"""Turn a decoded JSON value into KPI points: one number, or a series.

Accepted shapes (``where`` names the spot in the document, for messages):

* a number: the current value, observed at ``now``;
* a list of ``[timestamp, value]`` pairs;
* a list of ``{"timestamp": ..., "value": ...}`` objects (other keys ignored).

Timestamps are ISO-8601 text (no offset means UTC) or epoch *seconds*;
values must be JSON numbers. Booleans, null, NaN/±Infinity (Python's json
reads them) and text are refused, even text that looks numeric: ``"42.5"``
is usually a string-typed field, and JMESPath's ``to_number()`` makes the
conversion explicit. One bad item rejects the whole series, as in SQL.

Functions raise ValueError with a reason worded for people; the caller adds
which source and KPI.
"""

from __future__ import annotations

import math
import re
from datetime import datetime

from kpiwatch.sources.values import to_utc

MAX_POINTS = 10_000  # the same bound as SQL rows: more is a query without a limit
_SHAPES = "a number, or a list of [timestamp, value] pairs or {timestamp, value} objects"
_ADDRESS = re.compile(r"<.* at 0x[0-9a-fA-F]+>", re.DOTALL)  # object.__repr__


def json_points(result: object, where: str, now: datetime) -> list[tuple[datetime, float]]:
    """Points from ``result``: ``[(now, value)]`` for a number, else one per series item."""
    if isinstance(result, list):
        return json_series(result, where)
    if isinstance(result, dict):
        raise ValueError(f"expected {_SHAPES} at {where}, got {_kind(result)}")
    return [(now, json_number(result, f" at {where}"))]


def json_series(items: list[object], where: str) -> list[tuple[datetime, float]]:
    """One ``(timestamp, value)`` per item of a list of pairs or objects."""
    if not items:
        raise ValueError(f"{where} is an empty list: no observations")
    if len(items) > MAX_POINTS:
        raise ValueError(
            f"{where} has {len(items)} items, more than {MAX_POINTS}; slice it, e.g. [-100:]"
        )
    points = []
    for i, item in enumerate(items):
        if isinstance(item, list) and len(item) == 2:
            at, value = item
        elif isinstance(item, dict) and "timestamp" in item and "value" in item:
            at, value = item["timestamp"], item["value"]
        else:
            raise ValueError(
                f"item {i} of {where}: expected [timestamp, value] or "
                f"{{timestamp, value}}, got {_kind(item)}"
            )
        try:
            points.append((to_utc(at), json_number(value)))
        except ValueError as exc:
            raise ValueError(f"item {i} of {where}: {exc}") from None
    return points


def json_number(value: object, at: str = "") -> float:
    """A finite float from a JSON number; ``at`` (" at 'x.y'") goes into the message."""
    if value is None:
        raise ValueError(f"value{at} is null")
    if isinstance(value, bool):  # an int subclass, but never a KPI value
        raise ValueError(f"value {value!r}{at} is a boolean, not a number")
    if isinstance(value, str):
        hint = " (text; wrap it in to_number() in the query)" if _numeric(value) else ""
        raise ValueError(f"value {_show(value)}{at} is not a number{hint}")
    if not isinstance(value, int | float):
        raise ValueError(f"value{at} is {_kind(value)}, not a number")
    try:
        number = float(value)
    except OverflowError:  # an int beyond float's range
        raise ValueError(f"value {_show(value)}{at} is too large for a float") from None
    if not math.isfinite(number):
        raise ValueError(f"value {value!r}{at} is not finite")
    return number


def _numeric(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _kind(value: object) -> str:
    if isinstance(value, dict):
        keys = ", ".join(str(k) for k in list(value)[:5])
        return f"an object with keys {keys}" if keys else "an empty object"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    return _show(value)


def _show(value: object, limit: int = 60) -> str:
    """repr() for a message, shortened: a field can hold a whole document."""
    text = repr(value)
    if _ADDRESS.fullmatch(text):  # not JSON: a JMESPath &expression, shown without its address
        return f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 1] + "…"
