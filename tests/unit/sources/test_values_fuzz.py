"""Hostile source answers: any cell, JSON document, PromQL result or CSV file gives
finite values at UTC times, or a SourceError that says what and where; nothing else.

The converters (``to_number``, ``to_utc``, ``json_points``) are fuzzed directly; the
sources are fuzzed through ``fetch`` with their I/O replaced: SQL rows through
``_run``, HTTP and Prometheus answers through a requests transport adapter (no
sockets), CSV files written to a temporary directory.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
import urllib3
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from kpiwatch.config import rules
from kpiwatch.errors import BadValueError, SourceError
from kpiwatch.sources.base import FetchResult
from kpiwatch.sources.csv_file import CsvTableSource
from kpiwatch.sources.http import HttpJsonSource
from kpiwatch.sources.prometheus import PrometheusQuerySource
from kpiwatch.sources.series import json_points
from kpiwatch.sources.sql import SqlQuerySource
from kpiwatch.sources.values import to_number, to_utc

FUZZ = settings(
    max_examples=150,
    deadline=None,  # wall-clock deadlines flake on a loaded runner; pytest-timeout bounds a hang
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
NOW = datetime(2024, 6, 1, 12, tzinfo=UTC)
PYTHON_REPRS = re.compile(r"<class |Traceback|object at 0x")

# ---------------------------------------------------------------- hostile values

NUMERIC_TEXT = [
    "1e400",
    "-1e400",
    "NaN",
    "nan",
    "-nan",
    "inf",
    "+Inf",
    "-Infinity",
    "1,234",
    "1,234.5",
    "1.234,5",
    " 12 ",
    "12 ",
    "0x10",
    "1_000",
    "٣",  # an Arabic-Indic digit: float() reads it
    "12%",
    "$5",
    "",
    " ",
    "-",
    ".",
    "1e",
    "--1",
    "4" * 400,
    "\x00",
    "1\x00",
]
TIME_TEXT = [
    "2024-06-01",
    "2024-06-01T00:00:00Z",
    "2024-06-01 09:30:00+02:00",
    "20240601",
    "2024-02-30",
    "0001-01-01T00:00:00+01:00",  # before datetime.min once in UTC
    "9999-12-31T23:59:59-01:00",  # after datetime.max once in UTC
    "0001-01-01",
    "9999-12-31T23:59:59.999999",
    "2024-06-01T25:00",
    "1717200000",
    "1e20",
    "-62135596801",
    "253402300800",
    "last tuesday",
]
ODD_ZONES = st.sampled_from(
    [UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-23, minutes=-59))]
)
NUMBERS = (
    st.integers()
    | st.integers(min_value=2**1023, max_value=2**1100)  # beyond float's range
    | st.floats()
    | st.decimals()  # NaN, sNaN and ±Infinity included
    | st.sampled_from([Decimal("sNaN"), Decimal("-NaN"), Decimal("1e400"), Decimal("-0")])
)
MOMENTS = (
    st.datetimes()
    | st.datetimes(timezones=ODD_ZONES)
    | st.sampled_from(
        [
            datetime.min.replace(tzinfo=timezone(timedelta(hours=1))),
            datetime.max.replace(tzinfo=timezone(timedelta(hours=-1))),
        ]
    )
    | st.dates()
    | st.times()
    | st.timedeltas()
)
TEXTS = st.text(max_size=20) | st.sampled_from(NUMERIC_TEXT + TIME_TEXT)
CELLS = (
    st.none()
    | st.booleans()
    | NUMBERS
    | TEXTS
    | st.binary(max_size=8)
    | MOMENTS
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
    | st.builds(object)
)
JSON: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**1023, max_value=2**1100)
    | st.floats()
    | TEXTS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)
JSON_TIMESTAMPS = (
    st.sampled_from(TIME_TEXT)
    | st.floats()
    | st.integers()
    | st.sampled_from([1717200000, -62135596801, 253402300800, 1e20, True, None])
)
JSON_VALUES = (
    st.integers() | st.floats() | st.sampled_from(NUMERIC_TEXT) | st.none() | st.booleans()
)
SERIES = st.lists(
    st.tuples(JSON_TIMESTAMPS, JSON_VALUES).map(list)
    | st.fixed_dictionaries({"timestamp": JSON_TIMESTAMPS, "value": JSON_VALUES}),
    max_size=5,
)


# Answers a working source gives, with a hostile cell now and then: a property over only
# hostile input would test the error paths and hardly ever the way to a value.
GOOD_NUMBERS = st.integers(-(10**9), 10**9) | st.floats(allow_nan=False, allow_infinity=False)
GOOD_MOMENTS = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1), timezones=ODD_ZONES
)
GOOD_EPOCHS = st.integers(0, 4_102_444_800) | st.floats(0, 4_102_444_800)
GOOD_JSON_TIMES = GOOD_EPOCHS | GOOD_MOMENTS.map(datetime.isoformat) | st.dates().map(str)


def _mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``good``, and ``bad`` about one time in ten."""
    return st.integers(0, 9).flatmap(lambda n: bad if n == 0 else good)


PLAUSIBLE_SERIES = st.lists(
    st.tuples(_mostly(GOOD_JSON_TIMES, JSON_TIMESTAMPS), _mostly(GOOD_NUMBERS, JSON_VALUES)).map(
        list
    )
    | st.fixed_dictionaries(
        {
            "timestamp": _mostly(GOOD_JSON_TIMES, JSON_TIMESTAMPS),
            "value": _mostly(GOOD_NUMBERS, JSON_VALUES),
        }
    ),
    min_size=1,
    max_size=5,
)


def _check_points(points: Sequence[tuple[datetime, float]]) -> None:
    for at, value in points:
        assert type(value) is float, value
        assert math.isfinite(value), value
        assert at.tzinfo is UTC, at


def _check_observations(result: FetchResult, kpi: str = "k") -> None:
    event("observations")  # --hypothesis-show-statistics: how often a fetch succeeds
    assert result.observations
    _check_points([(o.observed_at, o.value) for o in result.observations])
    assert all(o.kpi_id == kpi for o in result.observations)
    times = [o.observed_at for o in result.observations]
    assert times == sorted(set(times))


def _check_names(exc: Exception, where: str) -> None:
    """The message says where the problem is (a row, a column, a JMESPath)."""
    assert re.search(where, str(exc)), exc
    assert not PYTHON_REPRS.search(str(exc)), exc


def _check_error(exc: SourceError, source: str, kpi: str = "k") -> None:
    event(type(exc).__name__)
    assert exc.source == source
    assert exc.kpi == kpi
    assert str(exc).startswith(f"source {source!r}: query for {kpi!r}"), exc
    assert not PYTHON_REPRS.search(str(exc)), exc


# ---------------------------------------------------------------- cells (SQL, CSV)


@FUZZ
@given(CELLS)
@example(Decimal("sNaN"))  # bug: "cannot convert signaling NaN to float", no value named
@example(Decimal("-sNaN"))
@example(10**400)
@example(Decimal("1e400"))
@example("1e400")
def test_any_cell_is_a_finite_number_or_a_worded_refusal(cell: object) -> None:
    try:
        number = to_number(cell)
    except ValueError as exc:
        message = str(exc)
        assert message.startswith("value "), message
        assert len(message) < 160, message
        assert not PYTHON_REPRS.search(message), message
    else:
        assert type(number) is float
        assert math.isfinite(number)
        assert isinstance(cell, int | float | Decimal)
        assert not isinstance(cell, bool)


@FUZZ
@given(CELLS)
@example("0001-01-01T00:00:00+01:00")  # bug: OverflowError from astimezone()
@example("9999-12-31T23:59:59-01:00")
@example(datetime.min.replace(tzinfo=timezone(timedelta(hours=1))))  # bug: OverflowError
@example(datetime.max.replace(tzinfo=timezone(timedelta(hours=-1))))
@example(Decimal("sNaN"))
@example(float("inf"))
def test_any_cell_is_a_utc_time_or_a_worded_refusal(cell: object) -> None:
    try:
        at = to_utc(cell)
    except ValueError as exc:
        message = str(exc)
        assert message.startswith("timestamp "), message
        assert len(message) < 160, message
        assert not PYTHON_REPRS.search(message), message
    else:
        assert at.tzinfo is UTC


class _Rows(SqlQuerySource):
    """A SQL source whose query "returned" the given columns and rows."""

    def __init__(self, columns: list[str] | None, rows: list[tuple[Any, ...]]) -> None:
        super().__init__("db", rules.SqlSource(type="sql", url="sqlite://"))
        self._answer = (columns, rows)

    def _run(self, query: str) -> tuple[Sequence[str] | None, list[tuple[Any, ...]]]:
        return self._answer


SQL_KPI = rules.Kpi(
    id="k", name="K", owner="o", direction="higher_is_better", source="db", query="SELECT 1"
)


@FUZZ
@given(
    st.integers(min_value=1, max_value=3).flatmap(
        lambda width: st.tuples(
            st.just([f"c{i}" for i in range(width)]),
            st.lists(st.tuples(*[CELLS] * width), max_size=4),
        )
    )
    | st.tuples(
        st.just(["value"]),
        st.lists(
            st.tuples(_mostly(GOOD_NUMBERS | st.decimals(-(10**9), 10**9), CELLS)), max_size=2
        ),
    )
    | st.tuples(
        st.just(["at", "value"]),
        st.lists(
            st.tuples(
                _mostly(GOOD_MOMENTS | GOOD_EPOCHS | st.dates() | GOOD_JSON_TIMES, CELLS),
                _mostly(GOOD_NUMBERS | st.decimals(-(10**9), 10**9), CELLS),
            ),
            max_size=4,
        ),
    )
)
@example((["at", "value"], [("0001-01-01T00:00:00+01:00", 1)]))  # bug: OverflowError escaped
@example((["at", "value"], [(datetime.min.replace(tzinfo=timezone(timedelta(hours=1))), 1)]))
@example((["value"], [(Decimal("sNaN"),)]))
def test_any_sql_rows_give_observations_or_a_bad_value_error(
    answer: tuple[list[str], list[tuple[Any, ...]]],
) -> None:
    columns, rows = answer
    try:
        result = _Rows(columns, rows).fetch(SQL_KPI, NOW)
    except BadValueError as exc:
        _check_error(exc, "db")
        if len(columns) == 2 and rows:  # a bad cell: the message names its row
            _check_names(exc, r"returned no rows|more than \d+ rows|: row \d+: ")
    else:
        _check_observations(result)


# ---------------------------------------------------------------- JSON (HTTP)


@FUZZ
@given(JSON | SERIES | PLAUSIBLE_SERIES | GOOD_NUMBERS)
@example([["0001-01-01T00:00:00+01:00", 1]])  # bug: OverflowError escaped
@example([{"timestamp": "9999-12-31T23:59:59-01:00", "value": 1}])
@example([[1e20, 1]])
@example(10**400)
@example([[0, 10**400]])
@example({"timestamp": 0, "value": 1})
def test_any_json_result_gives_points_or_says_where(result: object) -> None:
    try:
        points = json_points(result, "'q.x'", NOW)
    except ValueError as exc:
        _check_names(exc, r"'q\.x'")
    else:
        assert points
        _check_points(points)


Answer = tuple[int, bytes, str]  # status, body, Content-Type


class _Transport(requests.adapters.HTTPAdapter):
    """Answers every request from ``answer`` without a socket."""

    def __init__(self, answer: Callable[[requests.PreparedRequest], Answer]) -> None:
        super().__init__()
        self._answer = answer

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        status, body, content_type = self._answer(request)
        raw = urllib3.HTTPResponse(
            body=io.BytesIO(body),
            headers={"Content-Type": content_type},
            status=status,
            preload_content=False,
            request_method=request.method,
        )
        return self.build_response(request, raw)


def _offline(source: Any, answer: Callable[[requests.PreparedRequest], Answer]) -> Any:
    source._session.mount("http://", _Transport(answer))  # the sources' own session
    return source


JMESPATHS = [
    "@",
    "a",
    "a.b",
    "a[0]",
    "[-1]",
    "[*].value",
    "[*].[timestamp, value]",
    "a[-3:]",
    "to_number(a)",
    "length(@)",
    "max(@)",
    "sum([*].value)",
    "a | [0]",
    "values(@)",
    "*",
    "a.b[",  # invalid
    "&a",
]
BODIES = (
    PLAUSIBLE_SERIES.map(lambda doc: json.dumps(doc).encode())
    | st.fixed_dictionaries({"a": PLAUSIBLE_SERIES | GOOD_NUMBERS}).map(
        lambda doc: json.dumps(doc).encode()
    )
    | JSON.map(lambda doc: json.dumps(doc).encode())
    | SERIES.map(lambda doc: json.dumps(doc).encode())
    | st.fixed_dictionaries({"a": SERIES | JSON}).map(lambda doc: json.dumps(doc).encode())
    | st.binary(max_size=40)
    | st.sampled_from(
        [
            b"",
            b"1e400",
            b"-Infinity",
            b"NaN",
            b'{"a": 1e400}',
            b'{"a": [[0, NaN]]}',
            b"[" * 100_000,  # deeper than json.loads can go
            b"\xff\xfe{}",
            b"<html>sign in</html>",
        ]
    )
)
HTTP_SOURCE = rules.HttpSource(type="http", url="http://api.test/kpis", retries=0, timeout="5s")


@FUZZ
@given(
    BODIES,
    _mostly(st.sampled_from(["@", "a"]), st.sampled_from(JMESPATHS)),
    _mostly(st.just(200), st.sampled_from([404, 500])),
)
@example(b'[["0001-01-01T00:00:00+01:00", 1]]', "@", 200)  # bug: OverflowError escaped
@example(b'{"a": [[1e20, 1]]}', "a", 200)
@example(b"[" * 100_000, "@", 200)
@example(b"{}", "&a", 200)  # was: "<jmespath.visitor._Expression object at 0x…>"
def test_any_http_answer_gives_observations_or_a_source_error(
    body: bytes, query: str, status: int
) -> None:
    source = _offline(
        HttpJsonSource("api", HTTP_SOURCE), lambda _: (status, body, "application/json")
    )
    kpi = SQL_KPI.model_copy(update={"source": "api", "query": query})
    try:
        result = source.fetch(kpi, NOW)
    except SourceError as exc:
        _check_error(exc, "api")
    else:
        assert status == 200
        _check_observations(result)
    finally:
        source.close()


# ---------------------------------------------------------------- PromQL results

PROM_TIMES = (
    st.floats()
    | st.integers()
    | st.sampled_from(["1717243200", "1717243200.5", "nan", "", "x", 1e20, None, True])
)
PROM_VALUES = (
    st.sampled_from(["1", "-0.5", "NaN", "+Inf", "-Inf", "1e400", " 12 ", "1_000", "0x10"])
    | st.sampled_from(NUMERIC_TEXT)
    | JSON_VALUES
)
SAMPLES = st.tuples(PROM_TIMES, PROM_VALUES).map(list) | JSON
SERIES_OBJECTS = st.fixed_dictionaries(
    {"metric": st.dictionaries(st.text(max_size=4), st.text(max_size=4) | JSON, max_size=2)},
    optional={"value": SAMPLES, "values": st.lists(SAMPLES, max_size=4) | JSON},
)
RESULTS = st.fixed_dictionaries(
    {
        "resultType": st.sampled_from(["scalar", "vector", "matrix", "string", "bogus"]) | JSON,
        "result": SAMPLES | st.lists(SERIES_OBJECTS | JSON, max_size=3) | JSON,
    }
)
DOCUMENTS = st.fixed_dictionaries(
    {"status": st.sampled_from(["success", "error"]) | JSON},
    optional={"data": RESULTS | JSON, "error": JSON, "errorType": JSON},
)
GOOD_SAMPLES = st.tuples(
    _mostly(st.floats(0, 4_102_444_800) | st.integers(0, 4_102_444_800), PROM_TIMES),
    _mostly(GOOD_NUMBERS.map(repr) | st.sampled_from(["NaN", "+Inf"]), PROM_VALUES),
).map(list)
GOOD_SERIES = st.fixed_dictionaries(
    {
        "metric": st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2),
        "value": GOOD_SAMPLES,
        "values": st.lists(GOOD_SAMPLES, max_size=6),
    }
)
GOOD_RESULTS = st.fixed_dictionaries(
    {"resultType": st.just("scalar"), "result": GOOD_SAMPLES}
) | st.fixed_dictionaries(
    {
        "resultType": st.sampled_from(["vector", "matrix"]),
        "result": _mostly(st.lists(GOOD_SERIES, min_size=1, max_size=1), st.lists(GOOD_SERIES)),
    }
)
PROM_BODIES = (
    st.fixed_dictionaries({"status": st.just("success"), "data": GOOD_RESULTS}).map(
        lambda doc: json.dumps(doc).encode()
    )
    | DOCUMENTS.map(lambda doc: json.dumps(doc).encode())
    | st.binary(max_size=30)
)
PROM_SOURCE = rules.PrometheusSource(type="prometheus", url="http://prom.test:9090", timeout="5s")
VALID_SAMPLE = [1717243200, "1"]


def _prom(data: object) -> bytes:
    return json.dumps({"status": "success", "data": data}).encode()


@FUZZ
@given(
    PROM_BODIES,
    PROM_BODIES,
    _mostly(st.just(200), st.sampled_from([400, 422, 503])),
    st.booleans(),
)
@example(
    _prom({"resultType": "vector", "result": [{"metric": {}, "value": [1e20, "1"]}]}),
    b"",
    200,
    False,
)
@example(
    _prom({"resultType": "scalar", "result": VALID_SAMPLE}),
    _prom({"resultType": "matrix", "result": [{"metric": {}, "values": [[1e300, "1"]]}]}),
    200,
    True,
)
@example(_prom({"resultType": "scalar", "result": [1717243200, "NaN"]}), b"", 200, False)
@example(_prom({"resultType": "scalar", "result": [1717243200, "1e400"]}), b"", 200, False)
def test_any_prometheus_answer_gives_observations_or_a_source_error(
    instant: bytes, history: bytes, status: int, ranged: bool
) -> None:
    def answer(request: requests.PreparedRequest) -> Answer:
        body = history if "/query_range" in (request.url or "") else instant
        return status, body, "application/json"

    source = _offline(PrometheusQuerySource("prom", PROM_SOURCE), answer)
    kpi = SQL_KPI.model_copy(
        update={"source": "prom", "query": "up", "range": timedelta(hours=1) if ranged else None}
    )
    try:
        result = source.fetch(kpi, NOW)
    except SourceError as exc:
        _check_error(exc, "prom")
    else:
        _check_observations(result)
    finally:
        source.close()


# ---------------------------------------------------------------- CSV files

CSV_CELLS = st.sampled_from(NUMERIC_TEXT + TIME_TEXT + ["value", "at", "1", "2.5"]) | st.text(
    max_size=8
)


GOOD_CSV_CELLS = st.sampled_from(["1", "-2.5", "1,234.5", ".5", "1e3", "0"]) | GOOD_NUMBERS.map(
    repr
)
GOOD_CSV_TIMES = GOOD_JSON_TIMES.map(str)


@st.composite
def _plausible_sheets(draw: st.DrawFn) -> str:
    """value and at columns, mostly good cells, a hostile one now and then."""
    header = draw(st.permutations(["value", "at", "note"]))
    cells = {"value": _mostly(GOOD_CSV_CELLS, CSV_CELLS), "at": _mostly(GOOD_CSV_TIMES, CSV_CELLS)}
    rows = draw(
        st.lists(st.tuples(*[cells.get(name, st.text(max_size=3)) for name in header]), max_size=6)
    )
    out = io.StringIO()
    csv.writer(out).writerows([header, *rows])
    return out.getvalue()


@st.composite
def _sheets(draw: st.DrawFn) -> str:
    """A sheet with the value and timestamp columns somewhere, and hostile cells."""
    header = [*draw(st.lists(CSV_CELLS, max_size=3)), "value", "at"]
    header = draw(st.permutations(header))
    rows = draw(st.lists(st.lists(CSV_CELLS, max_size=len(header) + 1), max_size=5))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


@pytest.fixture(scope="module")
def sheet_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp)


CSV_KPI = SQL_KPI.model_copy(update={"source": "sheet", "query": "value"})
CELL_PROBLEM = re.compile(r": row \d+, column '[^']*': ")
WHOLE_FILE = re.compile(
    r"no data rows|no column |appears \d+ times|: row \d+: not valid CSV|is not UTF-8 text"
)


@FUZZ
@given(
    _plausible_sheets() | _sheets() | st.text(max_size=200),
    st.sampled_from([None, "at"]),
    st.sampled_from([",", ";"]),
)
@example("at,value\n0001-01-01T00:00:00+01:00,1\n", "at", ",")  # bug: message named no row
@example("at,value\n9999-12-31T23:59:59-01:00,1\n", "at", ",")
@example("at,value\n1e400,1\n", "at", ",")
@example("at,value\n2024-06-01,1e400\n", "at", ",")
@example("value\n\x00\n", None, ",")
@example('value\n"' + "x" * 200_000 + '"\n', None, ",")  # beyond csv's field size limit
def test_any_csv_file_gives_observations_or_names_row_and_column(
    sheet_dir: Path, text: str, timestamp_column: str | None, delimiter: str
) -> None:
    path = sheet_dir / "sheet.csv"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    config = rules.CsvSource(
        type="csv", path=str(path), timestamp_column=timestamp_column, delimiter=delimiter
    )
    source = CsvTableSource("sheet", config, base_dir=sheet_dir)  # the sheet's root
    try:
        result = source.fetch(CSV_KPI, NOW)
    except SourceError as exc:
        _check_error(exc, "sheet")
        _check_names(exc, f"{CELL_PROBLEM.pattern}|{WHOLE_FILE.pattern}")
    else:
        _check_observations(result)
        if timestamp_column is None:
            assert [o.observed_at for o in result.observations] == [NOW]


@pytest.mark.parametrize(
    ("cell", "reason"),
    [
        ("0001-01-01T00:00:00+01:00", "is out of range"),
        ("9999-12-31T23:59:59-01:00", "is out of range"),
        ("1e20", "out of range for epoch seconds"),
        ("2024-02-30", "is not an ISO-8601 date or date-time, nor epoch seconds"),
    ],
)
def test_a_csv_timestamp_out_of_range_names_row_and_column(
    sheet_dir: Path, cell: str, reason: str
) -> None:
    path = sheet_dir / "edge.csv"
    path.write_text(f"at,value\n2024-06-01,1\n{cell},2\n", encoding="utf-8")
    config = rules.CsvSource(type="csv", path=str(path), timestamp_column="at")
    with pytest.raises(BadValueError) as caught:
        CsvTableSource("sheet", config, base_dir=sheet_dir).fetch(CSV_KPI, NOW)
    assert "row 3, column 'at': " in str(caught.value)
    assert reason in str(caught.value)


def test_an_expression_reference_is_named_without_an_address() -> None:
    source = _offline(
        HttpJsonSource("api", HTTP_SOURCE), lambda _: (200, b"{}", "application/json")
    )
    kpi = SQL_KPI.model_copy(update={"source": "api", "query": "&a"})
    with pytest.raises(BadValueError) as caught:
        source.fetch(kpi, NOW)
    assert str(caught.value) == (
        "source 'api': query for 'k': value at '&a' is <_Expression>, not a number"
    )


def test_values_of_every_kind_are_named_plainly() -> None:
    """The regression examples above, worded: what, and why."""
    with pytest.raises(ValueError, match=r"^value Decimal\('sNaN'\) is not finite$"):
        to_number(Decimal("sNaN"))
    with pytest.raises(
        ValueError, match=r"^timestamp '0001-01-01T00:00:00\+01:00' is out of range in UTC$"
    ):
        to_utc("0001-01-01T00:00:00+01:00")
    with pytest.raises(ValueError, match=r"^timestamp 0001-01-01T00:00:00\+01:00 is out of range"):
        to_utc(datetime.min.replace(tzinfo=timezone(timedelta(hours=1))))
    # was: "<object object at 0x7f…>", a new message on every poll
    with pytest.raises(ValueError, match=r"^value <object> is not a number \(object\)$"):
        to_number(object())
    assert to_utc(date(1, 1, 1)) == datetime.min.replace(tzinfo=UTC)
    with pytest.raises(ValueError, match=r"^timestamp .* is not a datetime, date"):
        to_utc(time(1))
