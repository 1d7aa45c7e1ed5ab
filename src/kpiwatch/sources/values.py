"""Turn the raw cells a source returns into a KPI value and a UTC timestamp.

Both functions raise ValueError with a short reason worded for people
(``value 'abc' is not a number``); the caller adds which source, KPI and row.
Shared by every source that reads tabular data (SQL now, CSV later).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, time
from decimal import Decimal

_ADDRESS = re.compile(r"<.* at 0x[0-9a-fA-F]+>", re.DOTALL)  # object.__repr__


def to_number(value: object) -> float:
    """A finite float from an int, float or Decimal; anything else is refused.

    Text is refused even when it looks numeric: a query returning '42' is
    usually a bug (a VARCHAR column), and CAST in the query makes it explicit.
    """
    if value is None:
        raise ValueError("value is NULL")
    if isinstance(value, bool):  # bool is an int subclass, but never a KPI value
        raise ValueError(f"value {value!r} is a boolean, not a number")
    if isinstance(value, str):
        raise ValueError(f"value {_show(value)} is not a number (text; CAST it in the query)")
    if not isinstance(value, int | float | Decimal):
        raise ValueError(f"value {_show(value)} is not a number ({type(value).__name__})")
    if isinstance(value, Decimal) and value.is_snan():  # float() refuses it with its own words
        raise ValueError(f"value {_show(value)} is not finite")
    try:
        number = float(value)
    except OverflowError:  # an int beyond float's range
        number = math.inf
    if not math.isfinite(number):
        finite = isinstance(value, int) or (isinstance(value, Decimal) and value.is_finite())
        problem = "is too large for a float" if finite else "is not finite"
        raise ValueError(f"value {_show(value)} {problem}")
    return number


def to_utc(value: object) -> datetime:
    """An aware UTC datetime from a datetime, date, ISO-8601 text or epoch seconds.

    Naive datetimes (and text without an offset) are taken as UTC: databases
    commonly store UTC in ``timestamp without time zone`` columns.
    """
    if value is None:
        raise ValueError("timestamp is NULL")
    if isinstance(value, datetime):
        return _aware(value)
    if isinstance(value, date):
        return datetime.combine(value, time(), tzinfo=UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"timestamp {_show(value)} is not ISO-8601 text") from None
        return _aware(parsed, _show(value))
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(float(value), UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError(
                f"timestamp {_show(value)} is out of range for epoch seconds"
            ) from None
    raise ValueError(
        f"timestamp {_show(value)} is not a datetime, date, ISO-8601 text or epoch seconds"
    )


def _aware(value: datetime, shown: str | None = None) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before the first UTC datetime
        shown = shown or value.isoformat()
        raise ValueError(f"timestamp {shown} is out of range in UTC") from None


def _show(value: object, limit: int = 60) -> str:
    """repr() for a message, shortened: a cell can hold a whole document."""
    text = repr(value)
    if _ADDRESS.fullmatch(text):  # object.__repr__: an address would make every message new
        return f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 1] + "…"
