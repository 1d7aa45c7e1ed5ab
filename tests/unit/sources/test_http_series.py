"""The JSON shapes an HTTP KPI may select, and how bad ones are worded."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from kpiwatch.sources.series import MAX_POINTS, json_number, json_points, json_series

NOW = datetime(2024, 6, 1, 12, tzinfo=UTC)
DAY = datetime(2024, 6, 1, tzinfo=UTC)


@pytest.mark.parametrize(("value", "expected"), [(3, 3.0), (-0.5, -0.5), (10**20, 1e20)])
def test_a_number_is_observed_now(value: object, expected: float) -> None:
    assert json_points(value, "'x'", NOW) == [(NOW, expected)]


@pytest.mark.parametrize(
    "items",
    [
        [[1717200000, 1]],
        [["2024-06-01T00:00:00Z", 1]],
        [["2024-06-01", 1]],  # naive: UTC
        [{"timestamp": 1717200000.0, "value": 1, "label": "extra keys are ignored"}],
        [{"timestamp": "2024-06-01T02:00:00+02:00", "value": 1}],
    ],
)
def test_series_items(items: list[object]) -> None:
    assert json_series(items, "'x'") == [(DAY, 1.0)]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "value at 'x' is null"),
        (True, "value True at 'x' is a boolean, not a number"),
        ("abc", "value 'abc' at 'x' is not a number"),
        ("42.5", "value '42.5' at 'x' is not a number (text; wrap it in to_number() in the query)"),
        ("nan", "value 'nan' at 'x' is not a number"),  # not offered to_number(): not finite
        (float("nan"), "value nan at 'x' is not finite"),
        (float("-inf"), "value -inf at 'x' is not finite"),
        (10**400, "is too large for a float"),
        ("y" * 100, "value 'yyyyyyy"),
    ],
)
def test_bad_numbers(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        json_number(value, " at 'x'")
    assert len(str(caught.value)) < 120
    assert len(str(caught.value)) < 120


@pytest.mark.parametrize(
    ("result", "message"),
    [
        (
            {"a": 1, "b": 2},
            "expected a number, or a list of [timestamp, value] pairs or "
            "{timestamp, value} objects at 'x', got an object with keys a, b",
        ),
        ({}, "got an empty object"),
        ([], "'x' is an empty list: no observations"),
        ([1, 2], "item 0 of 'x': expected [timestamp, value] or {timestamp, value}, got 1"),
        (
            [[1, 2, 3]],
            "item 0 of 'x': expected [timestamp, value] or {timestamp, value}, got a list of 3",
        ),
        (
            [{"ts": 1, "v": 2}],
            "item 0 of 'x': expected [timestamp, value] or {timestamp, value}, "
            "got an object with keys ts, v",
        ),
        ([[1, 1], [2, None]], "item 1 of 'x': value is null"),
        ([[True, 1]], "item 0 of 'x': timestamp True is not a datetime"),
        ([["yesterday", 1]], "item 0 of 'x': timestamp 'yesterday' is not ISO-8601 text"),
        ([[1717200000000, 1]], "item 0 of 'x': timestamp 1717200000000 is out of range"),
        ([[1, "5"]], "item 0 of 'x': value '5' is not a number (text; wrap it in to_number()"),
        ([[1, 1]] * (MAX_POINTS + 1), f"'x' has {MAX_POINTS + 1} items, more than {MAX_POINTS}"),
    ],
)
def test_bad_shapes(result: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        json_points(result, "'x'", NOW)
