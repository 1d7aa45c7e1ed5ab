"""How rule problems show YAML values: as written, never as Python reprs."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

import pytest

from kpiwatch.config.written import written

_LOOP: list[Any] = []
_LOOP.append(_LOOP)  # YAML's `&a [*a]`


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "null"),
        (True, "true"),
        ("5x", "'5x'"),
        (7, "7"),
        (2.5, "2.5"),
        (float("nan"), ".nan"),
        (float("-inf"), "-.inf"),
        (date(2000, 1, 1), "2000-01-01"),
        (datetime(2000, 1, 1, 8, 30), "2000-01-01T08:30:00"),
        (time(9, 30), "09:30:00"),
        (timedelta(hours=36), "1d12h"),
        (b"\x00\x01", "binary data (2 bytes)"),
        ([date(2000, 1, 1)], "[2000-01-01]"),
        ({"a": [None, 1]}, "{'a': [null, 1]}"),
        pytest.param(10**5000, "a number of over 60 digits", id="5000-digits"),
        (object(), "a value of type object"),
    ],
)
def test_values_read_as_written(value: Any, shown: str) -> None:
    assert written(value) == shown


@pytest.mark.parametrize("value", [list(range(10_000)), "x" * 10_000, _LOOP, {"k": _LOOP}])
def test_large_and_looping_values_are_cut_short(value: Any) -> None:
    text = written(value)

    assert len(text) <= 60
    assert text.endswith("...")
