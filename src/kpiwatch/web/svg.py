"""Inline SVG for the status pages: a sparkline per KPI and a history chart.

Pure functions returning markup, so the pages need no JavaScript, images or
fonts from anywhere (the board must work on a closed network). Only numbers
and escaped text go into the markup: a colour or a label can never close the
attribute or element it sits in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape

from kpiwatch.evaluation.format import fmt_value

# The notification colours (notify/render/email.py): the board looks like the emails.
COLOURS = {"red": "#d93025", "yellow": "#f9ab00", "green": "#1e8e3e", "unknown": "#80868b"}
# Each colour halfway to white: a blind KPI's last verdict, shown greyed (pages.py).
MUTED = {"red": "#ec9792", "yellow": "#fcd57f", "green": "#8ec69e", "unknown": "#bfc2c5"}
_LINE = "#1a73e8"  # the series itself: blue, distinct from every status colour
_TARGET = "#1e8e3e"
_GLIDE = "#5f6368"
_AXIS = "#dadce0"
_TEXT = "#5f6368"

Glide = tuple[tuple[datetime, float], tuple[datetime, float]]


def _n(value: float) -> str:
    """A coordinate: short, and never ``nan``/``inf`` (callers keep values finite)."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _attr(text: str) -> str:
    return escape(text, quote=True)


def sparkline_svg(
    values: Sequence[float], *, width: int = 120, height: int = 28, colour: str = _LINE
) -> str:
    """A small line of ``values`` (oldest first) with a dot on the newest one.

    Scaled between the minimum and maximum shown; a constant series is a flat
    middle line. Non-finite values are skipped; with no value the result is an
    empty SVG of the same size, so rows keep their layout.
    """
    shown = [float(v) for v in values if math.isfinite(v)]
    head = (
        f'<svg class="spark" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="trend of the last {len(shown)} values">'
    )
    if not shown:
        return head + "</svg>"
    pad = 3.0  # room for the end dot and the stroke
    low, high = min(shown), max(shown)
    span = high / 2 - low / 2  # halves: high - low may overflow near the float limits
    step = (width - 2 * pad) / max(len(shown) - 1, 1)

    def y(v: float) -> float:
        if span == 0:
            return height / 2
        return height - pad - (v / 2 - low / 2) / span * (height - 2 * pad)

    coords = [(pad + i * step, y(v)) for i, v in enumerate(shown)]
    if len(coords) == 1:  # one point: draw it in the middle, no line
        coords = [(width / 2, height / 2)]
    path = " ".join(f"{_n(x)},{_n(yy)}" for x, yy in coords)
    colour = _attr(colour)
    last_x, last_y = coords[-1]
    return (
        f'{head}<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5" '
        f'stroke-linejoin="round" stroke-linecap="round"/>'
        f'<circle cx="{_n(last_x)}" cy="{_n(last_y)}" r="2.5" fill="{colour}"/></svg>'
    )


def chart_svg(
    points: Sequence[tuple[datetime, float]],
    *,
    thresholds: Mapping[str, float],
    target: float | None,
    glide: Glide | None,
    width: int = 720,
    height: int = 260,
    unit: str = "",
) -> str:
    """A history chart: the series, dashed threshold lines in their status colours,
    the target as a line and the glide path from baseline to target.

    ``thresholds`` maps ``"yellow"``/``"red"`` to a level. The vertical range
    covers the values, thresholds, target and glide, so every line is visible;
    the time range runs from the first point to the later of the last point and
    the glide's end (the target date), and the glide is cut at the first point.
    Axis labels give the lowest and highest value and the first and last date.
    """
    series = [(at, float(v)) for at, v in points if math.isfinite(v)]
    left, right, top, bottom = 64.0, 12.0, 12.0, 26.0
    plot_w, plot_h = width - left - right, height - top - bottom
    head = (
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="history of {len(series)} values against thresholds and target" '
        f'font-family="system-ui,-apple-system,Segoe UI,Roboto,Arial,sans-serif" '
        f'font-size="11">'
    )
    if not series:
        return (
            f'{head}<text x="{_n(width / 2)}" y="{_n(height / 2)}" text-anchor="middle" '
            f'fill="{_TEXT}">no observations yet</text></svg>'
        )
    levels = [v for _, v in series]
    levels += [v for v in thresholds.values() if math.isfinite(v)]
    if target is not None and math.isfinite(target):
        levels.append(target)
    t0 = series[0][0].timestamp()
    t1 = series[-1][0].timestamp()
    if glide is not None:
        levels += [glide[0][1], glide[1][1]]
        t1 = max(t1, glide[1][0].timestamp())
    low, high = min(levels), max(levels)
    if low == high:  # a flat chart still needs a range to draw in
        low, high = low - 1, high + 1
    margin = (high - low) * 0.06  # so lines at the extremes are not glued to the frame
    low, high = low - margin, high + margin
    if t1 == t0:
        t0, t1 = t0 - 43_200, t1 + 43_200  # one point: half a day either side

    def x(at: float) -> float:
        return left + (at - t0) / (t1 - t0) * plot_w

    def y(v: float) -> float:
        return top + (high - v) / (high - low) * plot_h

    parts = [head]
    # frame and axis labels
    parts.append(
        f'<rect x="{_n(left)}" y="{_n(top)}" width="{_n(plot_w)}" height="{_n(plot_h)}" '
        f'fill="#ffffff" stroke="{_AXIS}"/>'
    )
    for value in (high, low):
        parts.append(
            f'<text x="{_n(left - 6)}" y="{_n(y(value) + 4)}" text-anchor="end" '
            f'fill="{_TEXT}">{escape(fmt_value(value, unit))}</text>'
        )
    base = height - 8
    parts.append(
        f'<text x="{_n(left)}" y="{base}" text-anchor="start" fill="{_TEXT}">'
        f"{_date(t0)}</text>"
        f'<text x="{_n(width - right)}" y="{base}" text-anchor="end" fill="{_TEXT}">'
        f"{_date(t1)}</text>"
    )
    # thresholds, target and glide under the series, so the data stays on top
    for name in ("yellow", "red"):
        level = thresholds.get(name)
        if level is None or not math.isfinite(level):
            continue
        parts.append(_hline(y(level), left, width - right, COLOURS[name], dashed=True,
                            label=f"{name} {fmt_value(level, unit)}"))  # fmt: skip
    if target is not None and math.isfinite(target):
        parts.append(_hline(y(target), left, width - right, _TARGET, dashed=False,
                            label=f"target {fmt_value(target, unit)}"))  # fmt: skip
    if glide is not None:
        (g0, v0), (g1, v1) = glide
        a, b = g0.timestamp(), g1.timestamp()
        if b > a:
            start = max(a, t0)  # cut at the chart's left edge, on the line
            start_v = v0 + (v1 - v0) * (start - a) / (b - a)
            if start < b:
                parts.append(
                    f'<line class="glide" x1="{_n(x(start))}" y1="{_n(y(start_v))}" '
                    f'x2="{_n(x(b))}" y2="{_n(y(v1))}" stroke="{_GLIDE}" stroke-width="1.5" '
                    f'stroke-dasharray="2 4"/>'
                )
    path = " ".join(f"{_n(x(at.timestamp()))},{_n(y(v))}" for at, v in series)
    parts.append(
        f'<polyline class="series" points="{path}" fill="none" stroke="{_LINE}" '
        f'stroke-width="2" stroke-linejoin="round" stroke-linecap="round"/>'
    )
    last_at, last_v = series[-1]
    parts.append(
        f'<circle cx="{_n(x(last_at.timestamp()))}" cy="{_n(y(last_v))}" r="3.5" '
        f'fill="{_LINE}"/></svg>'
    )
    return "".join(parts)


def _hline(at_y: float, x0: float, x1: float, colour: str, *, dashed: bool, label: str) -> str:
    # Thresholds are labelled at the right end, the target (solid) at the left: the
    # glide path ends on the target at the right, where a label would collide with it.
    dash = ' stroke-dasharray="6 4"' if dashed else ""
    label_x, anchor = (x1 - 4, "end") if dashed else (x0 + 4, "start")
    return (
        f'<line x1="{_n(x0)}" y1="{_n(at_y)}" x2="{_n(x1)}" y2="{_n(at_y)}" stroke="{colour}" '
        f'stroke-width="1.5"{dash}/>'
        f'<text x="{_n(label_x)}" y="{_n(at_y - 4)}" text-anchor="{anchor}" fill="{colour}">'
        f"{escape(label)}</text>"
    )


def _date(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
