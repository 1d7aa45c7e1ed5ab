"""The inline SVG builders: well-formed markup, numbers only, escaped text."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

from kpiwatch.web.svg import chart_svg, sparkline_svg

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
