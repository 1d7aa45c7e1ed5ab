"""PrometheusQuerySource against a fake API on 127.0.0.1: answers real Prometheus rarely gives.

The real server's answers (series, syntax errors, ranges) are covered in
tests/integration/test_prometheus_source.py.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from local_http import LocalServer, QuietHandler, serving

from kpiwatch.config import rules
from kpiwatch.errors import BadValueError, SourceError, SourceTimeout, SourceUnavailable
from kpiwatch.sources.prometheus import MAX_POINTS, PrometheusQuerySource

NOW = datetime(2024, 6, 1, 12, tzinfo=UTC)
SECRET = "s3cr3t-header-value"

# (status, body, content type) for one request, given its query parameters
Answer = tuple[int, bytes, str]
Route = Callable[[dict[str, str]], Answer]


class FakePrometheus(LocalServer):
    def __init__(self) -> None:
        super().__init__(_Handler)
        self.routes: dict[str, Route] = {}
        self.seen: list[tuple[str, dict[str, str], dict[str, str]]] = []

    @property
    def url(self) -> str:
        return self.base_url


class _Handler(QuietHandler):
    server: FakePrometheus

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.server.seen.append(
            (parts.path, params, {k.lower(): v for k, v in self.headers.items()})
        )
        route = self.server.routes.get(parts.path)
        self.reply(*(route(params) if route else (404, b"not found", "text/plain")))


def ok(result_type: str, result: object) -> Answer:
    document = {"status": "success", "data": {"resultType": result_type, "result": result}}
    return 200, json.dumps(document).encode(), "application/json"


def error(status: int, error_type: str, message: str) -> Answer:
    document = {"status": "error", "errorType": error_type, "error": message}
    return status, json.dumps(document).encode(), "application/json"


@pytest.fixture
def fake() -> Iterator[FakePrometheus]:
    with serving(FakePrometheus(), poll_interval=0.01) as server:
        yield server


def _source(url: str, **options: object) -> PrometheusQuerySource:
    config = rules.PrometheusSource.model_validate({"type": "prometheus", "url": url, **options})
    return PrometheusQuerySource("prom", config)


def _kpi(query: str = "up", **options: object) -> rules.Kpi:
    return rules.Kpi.model_validate(
        {
            "id": "k",
            "name": "K",
            "owner": "ann",
            "direction": "higher_is_better",
            "source": "prom",
            "query": query,
            **options,
        }
    )


def _fetch_error(fake: FakePrometheus, answer: Answer, **options: object) -> SourceError:
    fake.routes["/api/v1/query"] = lambda params: answer
    with pytest.raises(SourceError) as caught:
        _source(fake.url, **options).fetch(_kpi(), NOW)
    return caught.value


def test_request_carries_query_time_timeout_and_headers(fake: FakePrometheus) -> None:
    fake.routes["/api/v1/query"] = lambda params: ok("scalar", [NOW.timestamp(), "3.5"])
    source = _source(fake.url + "/", headers={"X-Scope-OrgID": SECRET}, timeout="4s")
    result = source.fetch(_kpi("sum(up)"), NOW.replace(tzinfo=None))  # naive is UTC
    assert [(o.observed_at, o.value) for o in result.observations] == [(NOW, 3.5)]
    path, params, headers = fake.seen[0]
    assert path == "/api/v1/query"
    assert params["query"] == "sum(up)"
    assert float(params["time"]) == NOW.timestamp()
    assert 3.5 < float(params["timeout"]) <= 4  # Prometheus stops the query at our timeout
    assert headers["x-scope-orgid"] == SECRET


def test_http_503_without_json(fake: FakePrometheus) -> None:
    exc = _fetch_error(fake, (503, b"upstream overloaded", "text/plain"))
    assert str(exc) == (
        f"source 'prom': query for 'k': {fake.url}/api/v1/query answered "
        "HTTP 503 Service Unavailable: text/plain: 'upstream overloaded'"
    )


def test_http_error_with_other_json(fake: FakePrometheus) -> None:
    exc = _fetch_error(fake, (404, b'{"message": "no route"}', "application/json"))
    assert str(exc).endswith(
        '/api/v1/query answered HTTP 404 Not Found: \'{"message": "no route"}\''
    )


def test_not_json(fake: FakePrometheus) -> None:
    exc = _fetch_error(fake, (200, b"<html><body>Grafana</body></html>", "text/html"))
    assert "expected a Prometheus API response (JSON), got text/html: '<html>" in str(exc)


def test_empty_body(fake: FakePrometheus) -> None:
    assert str(_fetch_error(fake, (200, b"", "text/plain"))).endswith("got an empty body")


def test_string_result(fake: FakePrometheus) -> None:
    exc = _fetch_error(fake, ok("string", [NOW.timestamp(), "hello"]))
    assert "returned a string; an instant query must give a scalar or exactly one series" in str(
        exc
    )


@pytest.mark.parametrize(
    ("status", "error_type"), [(422, "execution"), (400, "bad_data"), (500, "internal")]
)
def test_prometheus_errors_are_quoted(fake: FakePrometheus, status: int, error_type: str) -> None:
    exc = _fetch_error(fake, error(status, error_type, "many-to-many matching not allowed"))
    assert type(exc) is SourceError
    assert str(exc).endswith(
        f"Prometheus refused PromQL 'up': many-to-many matching not allowed ({error_type})"
    )


def test_prometheus_query_timeout(fake: FakePrometheus) -> None:
    exc = _fetch_error(fake, error(503, "timeout", "query timed out in expression evaluation"))
    assert isinstance(exc, SourceTimeout)
    assert "query timed out in expression evaluation" in str(exc)


@pytest.mark.parametrize(
    "document",
    [
        {"status": "success"},
        {"status": "success", "data": {"resultType": "vector", "result": [{"value": "x"}]}},
        {"status": "success", "data": {"resultType": "scalar", "result": [1, 2]}},
        {"status": "success", "data": {"resultType": "scalar", "result": ["x", "1"]}},
        {"status": "success", "data": {"resultType": "vector", "result": [7]}},
        {"status": "success", "data": {"resultType": "histogram", "result": []}},
        [1, 2],
    ],
)
def test_malformed_documents_are_source_errors(fake: FakePrometheus, document: object) -> None:
    exc = _fetch_error(fake, (200, json.dumps(document).encode(), "application/json"))
    assert "unexpected" in str(exc) or "expected a Prometheus API response" in str(exc)


def test_credentials_in_the_url_never_show(fake: FakePrometheus) -> None:
    url = fake.url.replace("http://", "http://admin:hunter2@") + "/prom/?token=abc"
    fake.routes["/prom/api/v1/query"] = lambda params: (503, b"down", "text/plain")
    with pytest.raises(SourceError) as caught:
        _source(url, headers={"Authorization": SECRET}).fetch(_kpi(), NOW)
    exc = caught.value
    assert "hunter2" not in str(exc)
    assert "abc" not in str(exc)
    assert SECRET not in str(exc)
    assert "/prom/api/v1/query answered HTTP 503" in str(exc)
    assert fake.seen[0][1]["token"] == "abc"  # the URL's query string goes along


def test_connection_refused() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    source = _source(f"http://127.0.0.1:{port}", timeout="2s")
    with pytest.raises(SourceError) as caught:
        source.fetch(_kpi(), NOW)
    # not a timeout, but the source's failure: every KPI of it is blind, its owner hears
    assert type(caught.value) is SourceUnavailable
    message = str(caught.value)
    assert message.startswith(
        f"source 'prom': query for 'k': request to http://127.0.0.1:{port}/api/v1/query failed: "
    )
    assert "refused" in message.lower()
    assert "object at 0x" not in message


def test_timeout_when_the_server_never_answers() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()  # connections complete in the backlog, but nothing ever answers
        port = sock.getsockname()[1]
        source = _source(f"http://127.0.0.1:{port}", timeout="0.5s")
        with pytest.raises(SourceTimeout, match=r"timed out after 0\.\ds \(timeout 0\.5s\)"):
            source.fetch(_kpi(), NOW)


def _matrix(*series: dict[str, Any]) -> Answer:
    return ok("matrix", list(series))


def test_range_with_several_series_is_refused(fake: FakePrometheus) -> None:
    fake.routes["/api/v1/query"] = lambda params: ok("vector", [{"metric": {}, "value": [1, "1"]}])
    fake.routes["/api/v1/query_range"] = lambda params: _matrix(
        {"metric": {"pod": "x"}, "values": [[1, "1"]]},
        {"metric": {"pod": "y"}, "values": [[1, "2"]]},
    )
    with pytest.raises(
        SourceError, match=r'returned 2 series, expected one: \{pod="x"\}, \{pod="y"\};'
    ):
        _source(fake.url).fetch(_kpi(range="1h"), NOW)


def test_range_history_skips_non_finite_points(fake: FakePrometheus) -> None:
    t = NOW.timestamp()
    fake.routes["/api/v1/query"] = lambda params: ok("vector", [{"metric": {}, "value": [t, "5"]}])
    fake.routes["/api/v1/query_range"] = lambda params: _matrix(
        {"metric": {}, "values": [[t - 180, "1"], [t - 120, "NaN"], [t - 60, "+Inf"], [t, "4"]]}
    )
    result = _source(fake.url).fetch(_kpi(range="3m"), NOW)
    assert [(o.observed_at, o.value) for o in result.observations] == [
        (NOW - timedelta(minutes=3), 1.0),
        (NOW, 5.0),  # the instant value wins over the range's point at the same time
    ]
    params = fake.seen[1][1]
    assert (float(params["start"]), float(params["end"]), params["step"]) == (t - 180, t, "60s")


def test_fetch_range_is_split_at_the_point_limit(fake: FakePrometheus) -> None:
    def answer(params: dict[str, str]) -> Answer:
        start, end = float(params["start"]), float(params["end"])
        return _matrix({"metric": {}, "values": [[start, "1"], [end, "2"]]})

    fake.routes["/api/v1/query_range"] = answer
    source = _source(fake.url, step="10s")
    start = NOW - timedelta(days=2)  # 17,281 points at 10s
    result = source.fetch_range(_kpi(), start, NOW)
    windows = [(float(p["start"]), float(p["end"])) for _, p, _ in fake.seen]
    assert windows == [
        (start.timestamp(), start.timestamp() + (MAX_POINTS - 1) * 10),
        (start.timestamp() + MAX_POINTS * 10, NOW.timestamp()),
    ]
    assert all((end - begin) / 10 + 1 <= MAX_POINTS for begin, end in windows)
    assert len(result.observations) == 4
    assert result.current.observed_at == NOW


def test_fetch_range_with_no_data(fake: FakePrometheus) -> None:
    fake.routes["/api/v1/query_range"] = lambda params: _matrix()
    with pytest.raises(BadValueError, match="returned no finite values between 2024-05-31 12:00"):
        _source(fake.url).fetch_range(_kpi(), NOW - timedelta(days=1), NOW)


def test_fetch_range_end_before_start(fake: FakePrometheus) -> None:
    with pytest.raises(SourceError, match="is before its start"):
        _source(fake.url).fetch_range(_kpi(), NOW, NOW - timedelta(hours=1))


@pytest.mark.parametrize(
    ("step", "kpi_range", "expected"),
    [
        (None, "1m", 60),  # at least a minute
        (None, "1d", 173),  # 86400 / 500 = 172.8, rounded
        (None, None, 60),  # backfill of a KPI without range
        ("15s", "30d", 15),
        ("1.5s", "1h", 2),
        ("0.2s", "1h", 1),  # never below a second
    ],
)
def test_step(step: str | None, kpi_range: str | None, expected: int) -> None:
    options = {"step": step} if step else {}
    source = _source("http://127.0.0.1:9", **options)
    kpi = _kpi(range=kpi_range) if kpi_range else _kpi()
    assert source.step_for(kpi) == timedelta(seconds=expected)
