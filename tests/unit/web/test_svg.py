"""The inline SVG builders: well-formed markup, numbers only, escaped text."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest

from kpiwatch.web.svg import Bar, bars_svg, chart_svg, sparkline_svg

START = datetime(2026, 1, 1, tzinfo=UTC)


def test_sparkline_is_valid_svg_scaled_into_the_box() -> None:
    svg = sparkline_svg([1.0, 3.0, 2.0, float("nan"), 5.0], width=100, height=20, colour="#d93025")
    root = ET.fromstring(svg)
    assert root.get("width") == "100"
    assert root.get("height") == "20"
    line = root.find("{http://www.w3.org/2000/svg}polyline")
    assert line is not None
    assert line.get("stroke") == "#d93025"
    points = [tuple(map(float, p.split(","))) for p in (line.get("points") or "").split()]
    assert len(points) == 4  # nan skipped
    assert all(0 <= x <= 100 and 0 <= y <= 20 for x, y in points)
    assert points[-1][1] < points[0][1]  # the highest value is drawn highest


def test_sparkline_edge_cases() -> None:
    assert ET.fromstring(sparkline_svg([])).find("{http://www.w3.org/2000/svg}polyline") is None
    flat = ET.fromstring(sparkline_svg([2.0, 2.0, 2.0], height=28))
    line = flat.find("{http://www.w3.org/2000/svg}polyline")
    assert line is not None
    assert {p.split(",")[1] for p in (line.get("points") or "").split()} == {"14"}
    ET.fromstring(sparkline_svg([1e308, -1e308]))  # no overflow to inf/nan


def test_sparkline_escapes_the_colour() -> None:
    svg = sparkline_svg([1.0, 2.0], colour='"><script>x</script>')
    assert "<script" not in svg
    ET.fromstring(svg)


def test_chart_has_thresholds_target_glide_and_axis_labels() -> None:
    points = [(START + timedelta(days=i), 10.0 + i) for i in range(10)]
    glide = ((START, 10.0), (START + timedelta(days=30), 40.0))
    svg = chart_svg(
        points, thresholds={"yellow": 8.0, "red": 5.0}, target=40.0, glide=glide, unit="%"
    )
    root = ET.fromstring(svg)
    assert root.get("width") == "720"
    assert root.get("height") == "260"
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "2026-01-01" in texts
    assert "2026-01-31" in texts
    assert "yellow 8 %" in texts
    assert "red 5 %" in texts
    assert "target 40 %" in texts
    assert any(t and t.endswith("%") and "." in t for t in texts)  # min/max labels
    dashed = [el.get("stroke") for el in root.iter() if el.get("stroke-dasharray") == "6 4"]
    assert dashed == ["#f9ab00", "#d93025"]
    assert 'class="glide"' in svg


def test_chart_without_points_says_so() -> None:
    svg = chart_svg([], thresholds={}, target=None, glide=None)
    assert "no observations yet" in svg
    ET.fromstring(svg)


def test_chart_with_one_point_and_escaped_unit() -> None:
    svg = chart_svg([(START, 3.0)], thresholds={}, target=None, glide=None, unit="<b>&")
    assert "<b>" not in svg
    assert "&lt;b&gt;&amp;" in svg
    ET.fromstring(svg)


# -- bars: a KPI judged per period -------------------------------------------------------

SVG = "{http://www.w3.org/2000/svg}"


def _bars(values: list[float]) -> list[Bar]:
    return [Bar(f"M{i}", f"Month {i}", "2026", v) for i, v in enumerate(values)]


def _one(element: ET.Element, path: str) -> ET.Element:
    found = element.find(path)
    assert found is not None, path
    return found


def _at(element: ET.Element, name: str) -> float:
    return float(element.get(name) or "nan")


def test_bars_start_at_zero_with_the_plan_as_a_tick_at_its_height() -> None:
    bars = [Bar("Oct", "Oct 2026", "2026", 50.0, plan=100.0),
            Bar("Nov", "Nov 2026", "2026", 100.0, plan=100.0, open=True)]  # fmt: skip
    root = ET.fromstring(bars_svg(bars, thresholds={}, target=None, unit="$", period="month"))
    groups = list(root.iter(f"{SVG}g"))
    rects = [_one(g, f"{SVG}rect") for g in groups]
    ticks = [_one(g, f"{SVG}line[@class='plan']") for g in groups]
    bottom = [_at(r, "y") + _at(r, "height") for r in rects]
    assert bottom[0] == pytest.approx(bottom[1], abs=0.2)  # both from zero
    assert _at(rects[1], "height") == pytest.approx(2 * _at(rects[0], "height"), rel=0.01)
    for tick, rect in zip(ticks, rects, strict=True):
        assert _at(tick, "y1") == pytest.approx(_at(rects[1], "y"), abs=0.1)  # the plan: 100
        assert _at(tick, "x2") - _at(tick, "x1") > _at(rect, "width")  # wider than its bar
    assert [r.get("fill") for r in rects] == ["#1a73e8", "url(#open-720x260)"]


def test_negative_bars_go_down_from_a_zero_line() -> None:
    root = ET.fromstring(bars_svg(_bars([-5.0, 10.0]), thresholds={}, target=None))
    neg, pos = (_one(g, f"{SVG}rect") for g in root.iter(f"{SVG}g"))
    zero = _at(neg, "y")
    assert _at(pos, "y") + _at(pos, "height") == pytest.approx(zero, abs=0.2)
    zero_lines = [ln for ln in root.iter(f"{SVG}line") if ln.get("stroke") == "#5f6368"]
    assert len(zero_lines) == 1


def test_absolute_thresholds_and_target_are_lines_across_the_bars() -> None:
    svg = bars_svg(_bars([1.0, 2.0]), thresholds={"yellow": 3.0, "red": 0.5}, target=4.0,
                   unit="%")  # fmt: skip
    root = ET.fromstring(svg)
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert {"yellow 3 %", "red 0.5 %", "target 4 %"} <= set(texts)
    assert texts[0] == "4.24 %"  # the top: room above the highest line


def test_restated_bars_are_marked_and_every_bar_has_a_tooltip() -> None:
    bars = [Bar("Oct", "Oct 2026", "2026", 26000.0, plan=31000.0, restated=31000.0),
            Bar("Nov", "Nov 2026", "2026", 1.5)]  # fmt: skip
    root = ET.fromstring(bars_svg(bars, thresholds={}, target=None, unit="$", period="month"))
    groups = list(root.iter(f"{SVG}g"))
    titles = [g.findtext(f"{SVG}title") for g in groups]
    assert titles == [
        "Oct 2026: 26,000 $, plan 31,000 $, restated (was 31,000 $)", "Nov 2026: 1.5 $",
    ]  # fmt: skip
    assert [g.find(f"{SVG}path[@class='restated']") is not None for g in groups] == [True, False]
    assert root.get("aria-label") == (
        "bar chart of 2 months, Oct 2026 to Nov 2026, each with its plan as a tick; "
        "restated: Oct 2026"
    )
    assert root.findtext(f"{SVG}desc") == "; ".join(t or "" for t in titles)


def test_bar_labels_are_thinned_to_fit_and_escaped() -> None:
    bars = [Bar(f"<{i}>", f"<b>{i}", "2026" if i < 20 else "2027", float(i)) for i in range(24)]
    svg = bars_svg(bars, thresholds={}, target=None, width=360, height=220, unit="<u>")
    for raw in ("<b>", "<u>", "<1>"):
        assert raw not in svg
    root = ET.fromstring(svg)
    labels = [t for t in root.iter(f"{SVG}text") if (t.text or "").startswith("<")]
    assert labels[-1].text == "<23>"  # the newest is always labelled
    xs = [_at(t, "x") for t in labels]
    assert min(b - a for a, b in itertools.pairwise(xs)) >= 4 * 6.5 + 6
    years = [t.text for t in root.iter(f"{SVG}text") if (t.text or "").startswith("20")]
    assert years == ["2026", "2027"]


def test_bars_without_periods_say_so_and_skip_what_is_not_finite() -> None:
    empty = ET.fromstring(bars_svg([], thresholds={}, target=None, period="week"))
    assert [t.text for t in empty.iter(f"{SVG}text")] == ["no observations yet"]
    assert empty.get("aria-label") == "no weeks yet"
    root = ET.fromstring(bars_svg(_bars([float("nan"), 0.0]), thresholds={}, target=None))
    assert len(list(root.iter(f"{SVG}g"))) == 1  # nan skipped; a zero bar still drawn
    assert _at(_one(root, f"{SVG}g/{SVG}rect"), "height") >= 1
