"""A KPI trend chart as PNG, drawn with Pillow (no matplotlib: small, fast, no fonts cache).

The chart is drawn at twice its size and scaled down, which anti-aliases the
lines (Pillow draws them aliased). Output is deterministic for a given Pillow:
no clock, no randomness, the font is Pillow's embedded one.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from kpiwatch.evaluation.format import fmt_number

if TYPE_CHECKING:
    from PIL import Image, ImageDraw, ImageFont

_SCALE = 2
_BACKGROUND = "#ffffff"
_FRAME = "#dadce0"
_SERIES = "#1a73e8"
_TEXT = "#5f6368"
_TARGET = "#1e8e3e"
_GLIDE = "#80868b"
_THRESHOLD_COLOURS = {"yellow": "#f9ab00", "red": "#d93025"}

Point = tuple[datetime, float]


def trend_chart(
    values: Sequence[tuple[datetime, float]],
    *,
    thresholds: dict[str, float],
    target: float | None,
    glide: tuple[tuple[datetime, float], tuple[datetime, float]] | None = None,
    width: int = 560,
    height: int = 180,
) -> bytes:
    """A PNG line chart of ``values`` (oldest first) with thresholds, target and glide path.

    ``thresholds`` maps ``"yellow"``/``"red"`` to a level (dashed lines in
    those colours); ``glide`` is the straight path from a baseline to the
    target, drawn over the time span of the series. Non-finite values are
    skipped; no points gives an empty frame saying "no data".
    """
    if width < 40 or height < 30:
        raise ValueError(f"chart too small: {width}x{height}")
    points = sorted((t, v) for t, v in values if math.isfinite(v))
    s = _SCALE
    # Pillow is imported on the first chart drawn (an email): the daemon carries it only then
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (width * s, height * s), _BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=10 * s)
    left, top = 6 * s, 6 * s
    right, bottom = (width - 6) * s, (height - 6) * s
    label_width = int(draw.textlength("0,000,000.0", font=font)) + 8 * s
    plot_right = right - label_width  # threshold and target labels go right of the plot
    draw.rectangle((left, top, right - 1, bottom - 1), outline=_FRAME, width=s)
    if not points:
        _centred(draw, "no data", (left + right) // 2, (top + bottom) // 2, font)
        return _png(image, width, height)

    levels = {name: v for name, v in thresholds.items() if v is not None and math.isfinite(v)}
    series = [v for _, v in points]
    lines = [*levels.values(), *([target] if target is not None else [])]
    low, high = _y_range(series, lines)
    start, end = points[0][0], points[-1][0]
    span = (end - start).total_seconds()
    plot = (left + 4 * s, top + 16 * s, plot_right, bottom - 16 * s)

    def x(at: datetime) -> float:
        if span <= 0:
            return (plot[0] + plot[2]) / 2  # one point, or all at the same time
        return plot[0] + (at - start).total_seconds() / span * (plot[2] - plot[0])

    def y(value: float) -> float:
        return plot[3] - (value - low) / (high - low) * (plot[3] - plot[1])

    for name, level in sorted(levels.items()):
        colour = _THRESHOLD_COLOURS.get(name, _GLIDE)
        _dashed(draw, (plot[0], y(level)), (plot[2], y(level)), colour, 2 * s, 6 * s, 4 * s)
        _label(draw, f"{name} {fmt_number(level)}", plot[2] + 4 * s, y(level), colour, font)
    if target is not None:
        draw.line((plot[0], y(target), plot[2], y(target)), fill=_TARGET, width=s)
        _label(draw, f"target {fmt_number(target)}", plot[2] + 4 * s, y(target), _TARGET, font)
    if glide is not None and span > 0:
        _glide(draw, glide, start, end, x, y, _GLIDE, s)

    xy = [(x(t), y(v)) for t, v in points]
    if len(xy) > 1:
        draw.line(xy, fill=_SERIES, width=2 * s, joint="curve")
    last = xy[-1]
    r = 3 * s
    draw.ellipse((last[0] - r, last[1] - r, last[0] + r, last[1] + r), fill=_SERIES)

    # min and max of the series, each next to its point, kept inside the frame
    i_max = max(range(len(series)), key=lambda i: (series[i], -i))
    i_min = min(range(len(series)), key=lambda i: (series[i], i))
    _point_label(draw, f"max {fmt_number(series[i_max])}", xy[i_max], above=True,
                 box=(left, top, plot_right, bottom), font=font)  # fmt: skip
    if i_min != i_max:
        _point_label(draw, f"min {fmt_number(series[i_min])}", xy[i_min], above=False,
                     box=(left, top, plot_right, bottom), font=font)  # fmt: skip
    return _png(image, width, height)


def _y_range(series: Sequence[float], lines: Sequence[float]) -> tuple[float, float]:
    """The value range shown: the series and every line, padded; never empty."""
    low, high = min(*series, *lines), max(*series, *lines)
    if high == low:  # a constant series: centre it
        pad = abs(high) * 0.1 or 1.0
        return low - pad, high + pad
    pad = (high - low) * 0.08
    return low - pad, high + pad


def _glide(
    draw: ImageDraw.ImageDraw,
    glide: tuple[Point, Point],
    start: datetime,
    end: datetime,
    x: Callable[[datetime], float],
    y: Callable[[float], float],
    colour: str,
    s: int,
) -> None:
    """The glide path, clipped to the series' time span (its end may be months away)."""
    (t0, v0), (t1, v1) = glide
    total = (t1 - t0).total_seconds()
    if total <= 0:
        return

    def at(when: datetime) -> float:
        return v0 + (v1 - v0) * (when - t0).total_seconds() / total

    a, b = max(start, t0), min(end, t1)
    if a >= b:
        return
    _dashed(draw, (x(a), y(at(a))), (x(b), y(at(b))), colour, s, 2 * s, 3 * s)


def _dashed(
    draw: ImageDraw.ImageDraw,
    p0: tuple[float, float],
    p1: tuple[float, float],
    colour: str,
    width: int,
    dash: int,
    gap: int,
) -> None:
    length = math.hypot(p1[0] - p0[0], p1[1] - p0[1])
    if length == 0:
        return
    dx, dy = (p1[0] - p0[0]) / length, (p1[1] - p0[1]) / length
    pos = 0.0
    while pos < length:
        stop = min(pos + dash, length)
        draw.line((p0[0] + dx * pos, p0[1] + dy * pos, p0[0] + dx * stop, p0[1] + dy * stop),
                  fill=colour, width=width)  # fmt: skip
        pos = stop + gap


def _label(
    draw: ImageDraw.ImageDraw, text: str, x: float, y: float, colour: str,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
) -> None:  # fmt: skip
    draw.text((x, y), text, fill=colour, font=font, anchor="lm")


def _point_label(
    draw: ImageDraw.ImageDraw,
    text: str,
    point: tuple[float, float],
    *,
    above: bool,
    box: tuple[int, int, int, int],
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
) -> None:
    width = draw.textlength(text, font=font)
    x = min(max(point[0] - width / 2, box[0] + 4), box[2] - width - 4)
    y = point[1] - 6 * _SCALE if above else point[1] + 6 * _SCALE
    draw.text((x, y), text, fill=_TEXT, font=font, anchor="ld" if above else "la")


def _centred(
    draw: ImageDraw.ImageDraw, text: str, x: int, y: int,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
) -> None:  # fmt: skip
    draw.text((x, y), text, fill=_TEXT, font=font, anchor="mm")


def _png(image: Image.Image, width: int, height: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    image.resize((width, height), Image.Resampling.LANCZOS).save(out, format="PNG", optimize=True)
    return out.getvalue()
