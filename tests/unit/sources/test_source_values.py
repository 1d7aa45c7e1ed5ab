"""Cells to numbers and UTC timestamps."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from kpiwatch.sources.values import to_number, to_utc


@pytest.mark.parametrize(
    ("cell", "expected"), [(3, 3.0), (2.5, 2.5), (Decimal("1.25"), 1.25), (-0.0, 0.0)]
)
def test_numbers(cell: object, expected: float) -> None:
    assert to_number(cell) == expected
    assert type(to_number(cell)) is float


@pytest.mark.parametrize(
    ("cell", "reason"),
    [
        (None, "value is NULL"),
        (True, "value True is a boolean"),
        ("abc", "value 'abc' is not a number"),
        ("42", "value '42' is not a number"),
        (float("nan"), "value nan is not finite"),
        (float("-inf"), "value -inf is not finite"),
        (Decimal("NaN"), "is not finite"),
        (Decimal("1e400"), "is too large for a float"),
        (10**400, "is too large for a float"),
        (b"1", r"is not a number \(bytes\)"),
        ("x" * 500, r"'xxx.*…"),
    ],
)
def test_not_numbers(cell: object, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        to_number(cell)


EAST = timezone(timedelta(hours=2))


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        (datetime(2024, 5, 1, 9, 30), datetime(2024, 5, 1, 9, 30, tzinfo=UTC)),
        (datetime(2024, 5, 1, 9, 30, tzinfo=EAST), datetime(2024, 5, 1, 7, 30, tzinfo=UTC)),
        (date(2024, 5, 1), datetime(2024, 5, 1, tzinfo=UTC)),
        ("2024-05-01T09:30:00Z", datetime(2024, 5, 1, 9, 30, tzinfo=UTC)),
        ("2024-05-01 09:30:00+02:00", datetime(2024, 5, 1, 7, 30, tzinfo=UTC)),
        ("2024-05-01", datetime(2024, 5, 1, tzinfo=UTC)),
        (0, datetime(1970, 1, 1, tzinfo=UTC)),
        (Decimal("1714555800.5"), datetime(2024, 5, 1, 9, 30, 0, 500000, tzinfo=UTC)),
    ],
)
def test_timestamps_become_aware_utc(cell: object, expected: datetime) -> None:
    result = to_utc(cell)

    assert result == expected
    assert result.tzinfo is UTC


@pytest.mark.parametrize(
    ("cell", "reason"),
    [
        (None, "timestamp is NULL"),
        ("last tuesday", "is not ISO-8601 text"),
        (1e20, "out of range"),
        (float("nan"), "out of range"),
        (True, "is not a datetime"),
    ],
)
def test_bad_timestamps(cell: object, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        to_utc(cell)
