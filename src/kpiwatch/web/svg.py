"""Inline SVG for the status pages: a sparkline per KPI, a history chart, and for a
KPI judged per period (SPEC §2a) a bar per period with its plan.

Pure functions returning markup, so the pages need no JavaScript, images or
fonts from anywhere (the board must work on a closed network). Only numbers
and escaped text go into the markup: a colour or a label can never close the
attribute or element it sits in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import NamedTuple

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
_PLAN = "#202124"  # a plan's tick: dark, on the blue bars and beside them
_OPEN = "#d2e3fc"  # an open period's hatching, between the blue stripes
_RESTATED = "#b06000"  # the board's dark yellow: noticed, not alarming
_FONT = 'font-family="system-ui,-apple-system,Segoe UI,Roboto,Arial,sans-serif" font-size="11"'

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
    parts += _levels(thresholds, target, y, left, width - right, unit)
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


def _levels(
    thresholds: Mapping[str, float], target: float | None, y: Callable[[float], float],
    x0: float, x1: float, unit: str,
) -> list[str]:  # fmt: skip
    """The threshold lines (dashed) and the target line of a chart, labelled."""
    lines = []
    for name in ("yellow", "red"):
        level = thresholds.get(name)
        if level is None or not math.isfinite(level):
            continue
        lines.append(_hline(y(level), x0, x1, COLOURS[name], dashed=True,
                            label=f"{name} {fmt_value(level, unit)}"))  # fmt: skip
    if target is not None and math.isfinite(target):
        lines.append(_hline(y(target), x0, x1, _TARGET, dashed=False,
                            label=f"target {fmt_value(target, unit)}"))  # fmt: skip
    return lines


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


class Bar(NamedTuple):
    """One period of a KPI judged per period, as :func:`bars_svg` draws it."""

    label: str  # short, under the bar: "Nov", "W45", "3 Nov", "Q4"
    name: str  # in full, for the tooltip and screen readers: "Nov 2026"
    year: str  # the axis' second row, written where it changes: "2026"
    value: float  # the period's value (so far, while open)
    plan: float | None = None  # the period's plan: a tick across the bar
    open: bool = False  # not closed yet (still running, or within complete_after): hatched
    restated: float | None = None  # its value before a restatement: marked above the bar


def bars_svg(
    bars: Sequence[Bar],
    *,
    thresholds: Mapping[str, float],
    target: float | None,
    period: str = "period",
    width: int = 720,
    height: int = 260,
    unit: str = "",
) -> str:
    """A bar per period (oldest first): the plan as a short dark tick across its bar,
    an open period hatched, a restated one marked with a diamond above it.

    ``thresholds`` and ``target`` are levels in the KPI's unit, the same for every
    period (dashed and solid lines as in :func:`chart_svg`); thresholds in % of a
    plan are not levels and must not be passed. Bars start at zero. Labels under
    the bars are thinned to fit (the newest always labelled), the year written
    under the first bar and wherever it changes. Every bar has a tooltip, and the
    drawing a text alternative that names the periods, the open and restated ones.
    """
    shown = [b for b in bars if math.isfinite(b.value)]
    left, right, top, bottom = 64.0, 12.0, 18.0, 40.0
    plot_w, plot_h = width - left - right, height - top - bottom
    words = f"{period}s" if len(shown) != 1 else period
    summary = _bars_summary(shown, words)
    head = (
        f'<svg class="chart bars" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{_attr(summary)}" {_FONT}><title>{escape(summary)}</title>'
    )
    if not shown:
        return (
            f'{head}<text x="{_n(width / 2)}" y="{_n(height / 2)}" text-anchor="middle" '
            f'fill="{_TEXT}">no observations yet</text></svg>'
        )
    levels = [0.0, *(b.value for b in shown)]
    levels += [b.plan for b in shown if b.plan is not None and math.isfinite(b.plan)]
    levels += [v for v in thresholds.values() if math.isfinite(v)]
    if target is not None and math.isfinite(target):
        levels.append(target)
    low, high = min(levels), max(levels)
    if low == high:  # every value zero
        high = low + 1
    margin = (high - low) * 0.06
    high += margin
    if low < 0:
        low -= margin

    def y(v: float) -> float:
        return top + (high - v) / (high - low) * plot_h

    slot = plot_w / len(shown)
    bar_w = max(slot * 0.64, 1.0)
    tick = min(slot * 0.46, bar_w / 2 + 4)  # half the plan tick: a little wider than the bar
    # one id per drawing: the page holds a wide and a narrow one, one of them not displayed
    hatch = f"open-{width}x{height}"
    parts = [
        head,
        f'<desc>{escape(_bars_desc(shown, unit))}</desc>',
        f'<defs><pattern id="{hatch}" patternUnits="userSpaceOnUse" width="6" height="6" '
        f'patternTransform="rotate(45)"><rect width="6" height="6" fill="{_OPEN}"/>'
        f'<rect width="2.5" height="6" fill="{_LINE}"/></pattern></defs>',
        f'<rect x="{_n(left)}" y="{_n(top)}" width="{_n(plot_w)}" height="{_n(plot_h)}" '
        f'fill="#ffffff" stroke="{_AXIS}"/>',
    ]
    for value in (high, low):
        parts.append(
            f'<text x="{_n(left - 6)}" y="{_n(y(value) + 4)}" text-anchor="end" '
            f'fill="{_TEXT}">{escape(fmt_value(value, unit))}</text>'
        )
    if low < 0:
        parts.append(f'<line x1="{_n(left)}" y1="{_n(y(0))}" x2="{_n(width - right)}" '
                     f'y2="{_n(y(0))}" stroke="{_TEXT}" stroke-width="1"/>')  # fmt: skip
    for i, bar in enumerate(shown):
        centre = left + (i + 0.5) * slot
        top_y, bottom_y = y(max(bar.value, 0.0)), y(min(bar.value, 0.0))
        fill = f"url(#{hatch})" if bar.open else _LINE
        parts.append(
            f'<g class="bar{" open" if bar.open else ""}"><title>'
            f"{escape(_bar_title(bar, unit))}</title>"
            f'<rect x="{_n(centre - bar_w / 2)}" y="{_n(top_y)}" width="{_n(bar_w)}" '
            f'height="{_n(max(bottom_y - top_y, 1.0))}" fill="{fill}" stroke="{_LINE}" '
            f'stroke-width="1"/>'
        )
        if bar.plan is not None and math.isfinite(bar.plan):
            parts.append(
                f'<line class="plan" x1="{_n(centre - tick)}" y1="{_n(y(bar.plan))}" '
                f'x2="{_n(centre + tick)}" y2="{_n(y(bar.plan))}" stroke="{_PLAN}" '
                f'stroke-width="2.5"/>'
            )
        if bar.restated is not None:
            d = 4.0
            parts.append(
                f'<path class="restated" d="M{_n(centre)} {_n(top / 2 - d)}l{_n(d)} {_n(d)}'
                f'l{_n(-d)} {_n(d)}l{_n(-d)} {_n(-d)}z" fill="{_RESTATED}"/>'
            )
        parts.append("</g>")
    # thresholds and target over the bars: a level must stay visible where a bar reaches it
    parts += _levels(thresholds, target, y, left, width - right, unit)
    parts += _bar_labels(shown, left, slot, height)
    parts.append("</svg>")
    return "".join(parts)


def _bar_labels(bars: Sequence[Bar], left: float, slot: float, height: int) -> list[str]:
    """The short labels under the bars, every ``step``-th counting back from the newest so
    that none overlap (11 px text, about 6.5 px a character), and below them the year
    where it starts (the first bar's only when the next year starts far enough away)."""
    widest = max(len(b.label) for b in bars) * 6.5 + 6
    step = max(1, math.ceil(widest / slot))
    last = len(bars) - 1
    starts = [i for i, bar in enumerate(bars) if i == 0 or bar.year != bars[i - 1].year]
    years = [
        i for i, after in zip(starts, [*starts[1:], None], strict=True)
        if after is None or (after - i) * slot >= len(bars[i].year) * 6.5 + 6
    ]  # fmt: skip
    parts = []
    for i, bar in enumerate(bars):
        if (last - i) % step == 0:
            parts.append(
                f'<text x="{_n(left + (i + 0.5) * slot)}" y="{height - 24}" '
                f'text-anchor="middle" fill="{_TEXT}">{escape(bar.label)}</text>'
            )
        if i in years:
            parts.append(
                f'<text x="{_n(left + i * slot + 1)}" y="{height - 8}" text-anchor="start" '
                f'fill="{_TEXT}">{escape(bar.year)}</text>'
            )
    return parts


def _bar_title(bar: Bar, unit: str) -> str:
    """``Oct 2026: 26,000 $, plan 31,000 $, restated (was 31,000 $)``."""
    text = f"{bar.name}: {fmt_value(bar.value, unit)}"
    if bar.open:
        text += " so far (open: not final yet)"
    if bar.plan is not None:
        text += f", plan {fmt_value(bar.plan, unit)}"
    if bar.restated is not None:
        text += f", restated (was {fmt_value(bar.restated, unit)})"
    return text


def _bars_summary(bars: Sequence[Bar], words: str) -> str:
    """The drawing's text alternative in one sentence."""
    if not bars:
        return f"no {words} yet"
    text = f"bar chart of {len(bars)} {words}, {bars[0].name} to {bars[-1].name}"
    if any(b.plan is not None for b in bars):
        text += ", each with its plan as a tick"
    opened = [b.name for b in bars if b.open]
    if opened:
        text += f"; open (not final): {', '.join(opened)}"
    restated = [b.name for b in bars if b.restated is not None]
    if restated:
        text += f"; restated: {', '.join(restated)}"
    return text


def _bars_desc(bars: Sequence[Bar], unit: str) -> str:
    return "; ".join(_bar_title(b, unit) for b in bars)
