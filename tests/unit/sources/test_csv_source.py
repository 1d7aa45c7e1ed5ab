"""CsvTableSource on local files: shapes, parsing rules and the wording of its errors."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from kpiwatch.config import rules
from kpiwatch.config.file_roots import FileRoots
from kpiwatch.errors import BadValueError, SourceError
from kpiwatch.sources.csv_file import MAX_POINTS, CsvTableSource

NOW = datetime(2024, 6, 1, 12, tzinfo=UTC)
TESTDATA = Path(__file__).parents[2] / "testdata" / "csv"
KPI = rules.Kpi(
    id="k", name="K", owner="ann", direction="higher_is_better", source="sheet", query="value"
)


def _source(path: Path | str, base_dir: Path | None = None, **options: Any) -> CsvTableSource:
    # the file's own directory is a root: these tests are about reading, not about roots
    config = rules.CsvSource(type="csv", path=str(path), **options)
    roots = FileRoots.of(base_dir or Path.cwd(), [Path(path).absolute().parent])
    return CsvTableSource("sheet", config, base_dir=base_dir, roots=roots)


def _fetch(
    tmp_path: Path, text: str | bytes, query: str = "value", **options: Any
) -> list[tuple[datetime, float]]:
    file = tmp_path / "kpis.csv"
    if isinstance(text, str):
        file.write_text(text, encoding="utf-8", newline="")
    else:
        file.write_bytes(text)
    kpi = KPI.model_copy(update={"query": query})
    result = _source(file, **options).fetch(kpi, NOW)
    return [(o.observed_at, o.value) for o in result.observations]


def _error(tmp_path: Path, text: str, query: str = "value", **options: Any) -> SourceError:
    with pytest.raises(SourceError) as caught:
        _fetch(tmp_path, text, query, **options)
    return caught.value


# ------------------------------------------------------------ shapes


def test_without_timestamp_column_the_last_row_is_the_current_value(tmp_path: Path) -> None:
    text = "region,value\nnorth,1\nsouth,2\neast,42.5\n\n"
    assert _fetch(tmp_path, text) == [(NOW, 42.5)]


def test_earlier_rows_are_not_read_without_timestamp_column(tmp_path: Path) -> None:
    assert _fetch(tmp_path, "value\nTOTAL?\n7\n") == [(NOW, 7.0)]


def test_a_series_of_iso_dates_is_sorted_by_time(tmp_path: Path) -> None:
    text = "date,value\n2024-03-01,3\n2024-01-01,1\n2024-02-01,2\n"
    points = _fetch(tmp_path, text, timestamp_column="date")
    assert points == [
        (datetime(2024, 1, 1, tzinfo=UTC), 1.0),
        (datetime(2024, 2, 1, tzinfo=UTC), 2.0),
        (datetime(2024, 3, 1, tzinfo=UTC), 3.0),
    ]


def test_a_series_of_datetimes_offsets_and_epoch_seconds(tmp_path: Path) -> None:
    text = (
        "at,value\n"
        "2024-05-31 23:00,1\n"  # naive: UTC
        "2024-06-01T01:30:00+02:00,2\n"
        "1717203600,3\n"  # 2024-06-01 01:00 UTC
        "2024-06-01T02:00:00Z,4\n"
    )
    points = _fetch(tmp_path, text, timestamp_column="at")
    assert points == [
        (datetime(2024, 5, 31, 23, 0, tzinfo=UTC), 1.0),
        (datetime(2024, 5, 31, 23, 30, tzinfo=UTC), 2.0),
        (datetime(2024, 6, 1, 1, 0, tzinfo=UTC), 3.0),
        (datetime(2024, 6, 1, 2, 0, tzinfo=UTC), 4.0),
    ]


def test_a_spreadsheet_export_with_thousands_and_an_unfilled_tail() -> None:
    source = _source(TESTDATA / "monthly_kpis.csv", timestamp_column="month")
    signups = source.fetch(KPI.model_copy(update={"query": "signups"}), NOW)
    assert [o.value for o in signups.observations] == [1204.0, 1350.0, 1498.0]
    assert signups.current.observed_at == datetime(2024, 3, 1, tzinfo=UTC)
    churn = source.fetch(KPI.model_copy(update={"query": "churn_pct"}), NOW)
    assert churn.current.value == 2.4


def test_a_relative_path_resolves_against_base_dir() -> None:
    source = _source("csv/monthly_kpis.csv", base_dir=TESTDATA.parent)
    assert source.fetch(KPI.model_copy(update={"query": "signups"}), NOW).current.value == 1498


def test_a_relative_path_defaults_to_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "kpis.csv").write_text("value\n5\n")
    monkeypatch.chdir(tmp_path)
    assert _source("kpis.csv").fetch(KPI, NOW).current.value == 5


def test_semicolon_delimiter(tmp_path: Path) -> None:
    text = "date;value;note\n2024-01-01;1.5;a, b\n2024-01-02;2;\n"
    points = _fetch(tmp_path, text, timestamp_column="date", delimiter=";")
    assert [v for _, v in points] == [1.5, 2.0]


def test_a_byte_order_mark_and_padded_names_are_tolerated(tmp_path: Path) -> None:
    data = "\ufeffdate , value\r\n2024-01-01 , 3 \r\n".encode()
    assert _fetch(tmp_path, data, timestamp_column="date") == [
        (datetime(2024, 1, 1, tzinfo=UTC), 3.0)
    ]


def test_quoted_cells_with_newlines_keep_spreadsheet_row_numbers(tmp_path: Path) -> None:
    text = 'note,value\n"two\nlines",1\nok,x\n'
    assert "row 3, column 'value'" in str(_error(tmp_path, text, timestamp_column=None))


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("42", 42.0),
        ("-3.5", -3.5),
        ("+.5", 0.5),
        ("1e3", 1000.0),
        ("2.5E-2", 0.025),
        ('"1,234.5"', 1234.5),
        ('"-12,345,678"', -12345678.0),
    ],
)
def test_numbers_accepted(tmp_path: Path, cell: str, expected: float) -> None:
    assert _fetch(tmp_path, f"value\n{cell}\n") == [(NOW, expected)]


@pytest.mark.parametrize(
    ("cell", "reason"),
    [
        ("n/a", "'n/a' is not a number"),
        ("NaN", "'NaN' is not a number"),
        ("inf", "'inf' is not a number"),
        ("-Infinity", "'-Infinity' is not a number"),
        ("1_000", "'1_000' is not a number"),
        ('"1,23"', "'1,23' is not a number (a decimal comma?"),
        ('"12,3456"', "'12,3456' is not a number (a decimal comma?"),
        ("12.5%", "'12.5%' is not a number (a percentage"),
        ("$5", "'$5' is not a number"),
        ("1e999", "'1e999' is too large for a float"),
    ],
)
def test_numbers_refused(tmp_path: Path, cell: str, reason: str) -> None:
    error = _error(tmp_path, f"value\n{cell}\n")
    assert isinstance(error, BadValueError)
    assert f"row 2, column 'value': {reason}" in str(error)


def test_grouped_numbers_are_ambiguous_with_a_semicolon_delimiter(tmp_path: Path) -> None:
    error = _error(tmp_path, "value\n1,234\n", delimiter=";")
    assert "'1,234' is not a number (a decimal comma?" in str(error)


# ------------------------------------------------------------ empty cells and rows


def test_empty_rows_anywhere_are_skipped(tmp_path: Path) -> None:
    text = "\n\ndate,value\n\n2024-01-01,1\n,\n  ,  \n2024-01-02,2\n\n"
    assert [v for _, v in _fetch(tmp_path, text, timestamp_column="date")] == [1.0, 2.0]


def test_rows_at_the_end_without_a_value_are_not_filled_in_yet(tmp_path: Path) -> None:
    text = "date,value\n2024-01-01,1\n2024-01-02,2\n2024-01-03,\n2024-01-04\n"
    assert [v for _, v in _fetch(tmp_path, text, timestamp_column="date")] == [1.0, 2.0]
    assert _fetch(tmp_path, text) == [(NOW, 2.0)]


def test_an_empty_value_between_filled_rows_is_an_error(tmp_path: Path) -> None:
    text = "date,value\n2024-01-01,1\n2024-01-02,\n2024-01-03,3\n"
    error = _error(tmp_path, text, timestamp_column="date")
    assert isinstance(error, BadValueError)
    assert "row 3, column 'value': empty cell" in str(error)


def test_an_empty_timestamp_is_an_error(tmp_path: Path) -> None:
    error = _error(tmp_path, "date,value\n2024-01-01,1\n,2\n", timestamp_column="date")
    assert isinstance(error, BadValueError)
    assert "row 3, column 'date': empty cell" in str(error)


def test_a_bad_cell_names_its_spreadsheet_row_and_column(tmp_path: Path) -> None:
    rows = "".join(f"2024-01-0{day},{day}\n" for day in range(1, 6))
    text = f"date,churn_pct\n{rows}2024-01-06,n/a\n2024-01-07,1\n"
    error = _error(tmp_path, text, "churn_pct", timestamp_column="date")
    assert isinstance(error, BadValueError)
    assert str(error) == (
        "source 'sheet': query for 'k': row 7, column 'churn_pct': 'n/a' is not a number"
    )


def test_a_bad_timestamp(tmp_path: Path) -> None:
    error = _error(tmp_path, "date,value\n6/1/2024,1\n", timestamp_column="date")
    assert isinstance(error, BadValueError)
    assert "row 2, column 'date': '6/1/2024' is not an ISO-8601 date" in str(error)


def test_epoch_milliseconds_are_out_of_range(tmp_path: Path) -> None:
    error = _error(tmp_path, "at,value\n1717200000000,1\n", timestamp_column="at")
    assert "row 2, column 'at': timestamp 1717200000000.0 is out of range" in str(error)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "no data rows (the file is empty)"),
        ("\n \n", "no data rows (the file is empty)"),
        ("date,value\n", "no data rows (only the header)"),
        ("\ufeffdate,value\r\n,\r\n", "no data rows (only the header)"),
        ("date,value\n2024-01-01,\n", "no data rows: column 'value' is empty in every row"),
    ],
)
def test_no_data_rows(tmp_path: Path, text: str, reason: str) -> None:
    error = _error(tmp_path, text, timestamp_column="date")
    assert isinstance(error, BadValueError)
    assert reason in str(error)


def test_long_series_keep_the_newest_points(tmp_path: Path) -> None:
    rows = "".join(f"{1_700_000_000 + i * 60},{i}\n" for i in range(MAX_POINTS + 5))
    points = _fetch(tmp_path, f"at,value\n{rows}", timestamp_column="at")
    assert len(points) == MAX_POINTS
    assert points[-1][1] == MAX_POINTS + 4


def test_duplicate_timestamps_keep_the_last_row(tmp_path: Path) -> None:
    text = "date,value\n2024-01-01,1\n2024-01-01,2\n"
    assert _fetch(tmp_path, text, timestamp_column="date") == [
        (datetime(2024, 1, 1, tzinfo=UTC), 2.0)
    ]


# ------------------------------------------------------------ columns


def test_a_missing_value_column_suggests_the_closest(tmp_path: Path) -> None:
    error = _error(tmp_path, "date,churn_pct,mrr\n2024-01-01,1,2\n", "Churn")
    assert not isinstance(error, BadValueError)  # a configuration problem, not a value
    assert str(error) == (
        "source 'sheet': query for 'k': no column 'Churn' for the value column (the KPI's query)"
        "; did you mean 'churn_pct'? (columns: 'date', 'churn_pct', 'mrr')"
    )


def test_a_missing_column_without_a_close_match_lists_the_columns(tmp_path: Path) -> None:
    error = _error(tmp_path, "a,b\n1,2\n", "revenue")
    assert "no column 'revenue'" in str(error)
    assert "did you mean" not in str(error)
    assert "(columns: 'a', 'b')" in str(error)


def test_a_missing_timestamp_column(tmp_path: Path) -> None:
    error = _error(tmp_path, "Day,value\n2024-01-01,1\n", timestamp_column="day")
    assert not isinstance(error, BadValueError)
    assert "no column 'day' for the timestamp_column; did you mean 'Day'?" in str(error)
    assert "(columns: 'Day', 'value')" in str(error)
    # even when there are no rows to read yet
    assert "no column 'day'" in str(_error(tmp_path, "Day,value\n", timestamp_column="day"))


def test_a_wrong_delimiter_is_pointed_out(tmp_path: Path) -> None:
    error = _error(tmp_path, "date;value\n2024-01-01;1\n")
    assert "is the delimiter ';', not ','?" in str(error)


def test_a_duplicated_value_column(tmp_path: Path) -> None:
    error = _error(tmp_path, "value,x,value\n1,2,3\n")
    assert "column 'value' appears 2 times (1, 3)" in str(error)


def test_a_kpi_without_query(tmp_path: Path) -> None:
    error = _error(tmp_path, "value\n1\n", "")
    assert "no value column (the KPI's query): set it to a column name" in str(error)


def test_short_rows_read_as_empty_cells(tmp_path: Path) -> None:
    assert _fetch(tmp_path, "date,value,note\n2024-01-01,1,x\n2024-01-02\n") == [(NOW, 1.0)]


# ------------------------------------------------------------ the file itself


def test_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    with pytest.raises(SourceError) as caught:
        _source(missing).fetch(KPI, NOW)
    assert not isinstance(caught.value, BadValueError)
    assert f"file not found: {missing}" in str(caught.value)


def test_a_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"not read: '.*' is a directory: name a regular file"):
        _source(tmp_path).fetch(KPI, NOW)


def test_a_file_over_max_bytes(tmp_path: Path) -> None:
    error = _error(tmp_path, "value\n" + "1\n" * 100, max_bytes=100)
    assert "file larger than 100 bytes limit (max_bytes)" in str(error)


def test_text_that_is_not_utf8(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"is not UTF-8 text \(byte 0xe9 at offset 14\)"):
        _fetch(tmp_path, "name,value\ncaf\u00e9,1\n".encode("cp1252"))


def test_invalid_csv_names_the_row(tmp_path: Path) -> None:
    huge = "x" * 200_000  # over the csv module's field size limit
    with pytest.raises(SourceError, match="row 3: not valid CSV: field larger than field limit"):
        _fetch(tmp_path, f"note,value\nok,1\n{huge},2\n")


def test_fetch_measures_its_duration_and_close_is_harmless(tmp_path: Path) -> None:
    file = tmp_path / "kpis.csv"
    file.write_text("value\n1\n")
    source = _source(file)
    assert source.fetch(KPI, NOW).duration >= 0
    source.close()
    source.close()
