"""Numbers, units and ages worded for people, for the reasons of findings.

Rules (deterministic, locale-independent):

* up to 4 significant digits (``5.8``, ``0.1235``, ``1235``);
* from 10,000 up, whole numbers with thousands separators (``1,234,567``),
  because ``1.235e+06`` is hard to read for a KPI such as revenue;
* the unit follows the number after a space (``5.8 %``), nothing when empty.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import timedelta

from kpiwatch.config.durations import format_duration

_LARGE = 1e4  # from here on: grouped whole numbers
_HUGE = 1e15  # from here on: scientific again (grouping would be unreadable)


def _fmt(value: float, digits: int) -> str:
    magnitude = abs(value)
    if 1e-4 <= magnitude < _LARGE:  # the common case, first
        return f"{value:.{digits}g}"
    if _LARGE <= magnitude < _HUGE:
        if digits <= 4:
            text = f"{value:,.0f}"
        else:
            text = f"{value:,.{digits - 4}f}".rstrip("0").rstrip(".")
    elif math.isfinite(value):
        text = f"{value:.{digits}g}"
    else:
        return "nan" if math.isnan(value) else ("∞" if value > 0 else "-∞")
    return "0" if text == "-0" else text


def fmt_number(value: float) -> str:
    """A number with the noise trimmed: ``5.8``, ``0.1235``, ``1,234,567``."""
    return _fmt(value, 4)


def with_unit(text: str, unit: str) -> str:
    """``"5.8"`` and ``"%"`` -> ``"5.8 %"``; the text alone when the unit is empty."""
    return f"{text} {unit}" if unit else text


def fmt_value(value: float, unit: str) -> str:
    """A number followed by its unit: ``5.8 %``."""
    text = _fmt(value, 4)
    return f"{text} {unit}" if unit else text


def fmt_pair(a: float, b: float) -> tuple[str, str]:
    """Two numbers that are compared, with enough digits that unequal ones read unequal.

    ``5.50001 > 5.5`` must not read ``5.5 > 5.5``.
    """
    for digits in (4, 6, 9, 12, 17):
        left, right = _fmt(a, digits), _fmt(b, digits)
        if left != right or a == b:
            return left, right
    return left, right


def fmt_series(values: Sequence[float]) -> list[str]:
    """Numbers shown side by side, with one number of decimals: ``4.1 → 4.6 → 5.0``."""
    decimals = 0
    for value in values:
        text = _fmt(value, 4)
        if "e" in text or "," in text or not math.isfinite(value):
            return [_fmt(v, 4) for v in values]  # mixed magnitudes: keep each readable alone
        point = text.find(".")
        if point >= 0:
            decimals = max(decimals, len(text) - point - 1)
    decimals = min(decimals, 6)
    out = []
    for value in values:
        text = f"{value:.{decimals}f}"
        out.append(text[1:] if text[0] == "-" and float(text) == 0 else text)  # no "-0.0"
    return out


def fmt_span(delta: timedelta) -> str:
    """A configured duration, exact, in days when whole days: ``7d``, ``28d``, ``1h30m``."""
    seconds = int(delta.total_seconds())
    if seconds and seconds % 86_400 == 0:
        return f"{seconds // 86_400}d"  # as people write ``over: 7d`` (not ``1w``)
    return format_duration(delta)


def fmt_age(delta: timedelta) -> str:
    """A duration rounded down to its two leading units: ``3d4h``, ``2h5m``, ``45s``."""
    seconds = max(0, int(delta.total_seconds()))
    units = (("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60), ("s", 1))
    for i, (name, size) in enumerate(units):
        if seconds >= size or size == 1:
            lead, rest = divmod(seconds, size)
            text = f"{lead}{name}"
            if i + 1 < len(units):
                next_name, next_size = units[i + 1]
                second = rest // next_size
                if second:
                    text += f"{second}{next_name}"
            return text
    return "0s"  # pragma: no cover - the loop always returns


def fmt_pct(pct: float) -> str:
    """A percentage as people say it: whole from 10 up (``36 %``), one decimal below (``9.5 %``).

    A 36.4 % drop reads as 36 %; below 10 the decimal still tells 1.4 % from 1 %.
    Whole percentages group like other numbers (``1234 %``, ``12,346 %``).
    """
    text = f"{pct:.1f}"
    if abs(float(text)) >= 10:  # 9.96 rounds to "10.0": shown as "10"
        text = fmt_number(float(round(pct)))
    elif text == "-0.0":
        text = "0.0"
    return f"{text} %"
