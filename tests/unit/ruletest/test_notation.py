"""The series notation of rule tests: numbers, a+bxN / a-bxN expansions, gaps."""

from __future__ import annotations

import re

import pytest

from kpiwatch.ruletest.notation import MAX_STEPS, parse_series


def test_numbers_expansions_and_gaps() -> None:
    assert parse_series("4 4.2 4.8+0.4x3 _ 6") == [4.0, 4.2, 4.8, 5.2, 5.6, 6.0, None, 6.0]


def test_an_expansion_gives_n_plus_one_values_as_promtool_does() -> None:
    assert parse_series("1+1x0") == [1.0]
    assert parse_series("10-2x3") == [10.0, 8.0, 6.0, 4.0]
    assert parse_series("-1+0.5x2") == [-1.0, -0.5, 0.0]


def test_an_expansion_multiplies_instead_of_adding_up_rounding_errors() -> None:
    assert parse_series("0.1+0.1x9")[-1] == 0.1 + 9 * 0.1


def test_gap_runs() -> None:
    assert parse_series("1 _x3 2") == [1.0, None, None, None, 2.0]


def test_exponents_and_signs() -> None:
    assert parse_series("1e3 -2.5 +.5") == [1000.0, -2.5, 0.5]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no values"),
        ("4 four 5", "item 2 'four' is not a number, a+bxN, a-bxN, _ or _xN"),
        ("4+2x", "item 1 '4+2x' is not a number"),
        ("1e999", "item 1 '1e999' is not a finite number"),
        ("nan", "item 1 'nan' is not a number"),
        (f"1+1x{MAX_STEPS + 1}", "more than 100,000 steps"),
        (f"_x{MAX_STEPS} 1", "more than 100,000 steps"),
    ],
)
def test_bad_series_say_which_item(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_series(text)
