from __future__ import annotations

from datetime import timedelta

import pytest

from kpiwatch.evaluation.format import fmt_age, fmt_number, fmt_pair, fmt_series, fmt_value


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (5.8, "5.8"),
        (5.83333333, "5.833"),
        (0.1234567, "0.1235"),
        (3.0, "3"),
        (1234.4, "1234"),
        (12345.6, "12,346"),
        (1234567, "1,234,567"),
        (-2500000.4, "-2,500,000"),
        (0.000012345, "1.234e-05"),
        (-0.0, "0"),
        (0.0, "0"),
        (float("nan"), "nan"),
    ],
)
def test_fmt_number_trims_noise_and_keeps_big_numbers_readable(value: float, text: str) -> None:
    assert fmt_number(value) == text


def test_unit_follows_the_number_after_a_space_unless_empty() -> None:
    assert fmt_value(5.8, "%") == "5.8 %"
    assert fmt_value(1234567, "EUR") == "1,234,567 EUR"
    assert fmt_value(3.0, "") == "3"


def test_pair_gets_enough_digits_to_read_unequal() -> None:
    assert fmt_pair(5.8, 5.5) == ("5.8", "5.5")
    left, right = fmt_pair(5.50001, 5.5)
    assert left != right
    assert right == "5.5"
    assert fmt_pair(5.5, 5.5) == ("5.5", "5.5")


def test_series_share_the_number_of_decimals() -> None:
    assert fmt_series([4.1, 4.6, 5.0, 5.3]) == ["4.1", "4.6", "5.0", "5.3"]
    assert fmt_series([4.0, 5.0]) == ["4", "5"]
    assert fmt_series([-0.01, 0.0]) == ["-0.01", "0.00"]
    assert fmt_series([12345.0, 1.5]) == ["12,345", "1.5"]  # mixed magnitudes: each alone


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(days=3), "3d"),
        (timedelta(days=2, hours=5, minutes=30), "2d5h"),
        (timedelta(minutes=90), "1h30m"),
        (timedelta(seconds=45), "45s"),
        (timedelta(days=15), "2w1d"),
        (timedelta(0), "0s"),
    ],
)
def test_age_shows_its_two_leading_units(delta: timedelta, text: str) -> None:
    assert fmt_age(delta) == text
