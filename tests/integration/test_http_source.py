"""HttpJsonSource against a real HTTP server on 127.0.0.1, scripted per path."""

from __future__ import annotations

import base64
import gzip
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from local_http import LocalServer, QuietHandler, serving

from kpiwatch.config import rules
from kpiwatch.errors import BadValueError, SourceError, SourceTimeout
from kpiwatch.sources.http import HttpJsonSource

NOW = datetime(2024, 6, 1, 12, tzinfo=UTC)
TOKEN = "s3cr3t-bearer-token"
QUERY_TOKEN = "qs-secret-1234"


@dataclass
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


Route = Callable[["Handler", int], None]  # (handler, 1-based count of requests to the path)


class Handler(QuietHandler):
    server: Server

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        seen = Seen(
            self.command,
            parts.path,
            parse_qs(parts.query),
            {k.lower(): v for k, v in self.headers.items()},
            self.rfile.read(length),
        )
        with self.server.lock:
            self.server.seen.append(seen)
            count = sum(1 for s in self.server.seen if s.path == parts.path)
        route = self.server.routes.get(parts.path)
        if route is None:
            self.reply(404, b"no such metric", "text/plain")
        else:
            route(self, count)


class Server(LocalServer):
    def __init__(self) -> None:
        super().__init__(Handler)
        self.routes: dict[str, Route] = {}
        self.seen: list[Seen] = []
        self.lock = threading.Lock()

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def requests_to(self, path: str) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.path == path]


def json_route(document: object, status: int = 200) -> Route:
    body = json.dumps(document).encode()
    return lambda handler, count: handler.reply(status, body)


def slow_route(seconds: float) -> Route:
    def slow(handler: Handler, count: int) -> None:
        time.sleep(seconds)
        handler.reply(200, b"1")

    return slow


@pytest.fixture
def server() -> Iterator[Server]:
    with serving(Server()) as httpd:
        yield httpd


def kpi(query: str = "data.value", **params: str) -> rules.Kpi:
    return rules.Kpi(
        id="churn",
        name="Churn",
        owner="ann",
        direction="lower_is_better",
        source="api",
        query=query,
        params=params,
    )


def make_source(url: str, **options: Any) -> HttpJsonSource:
    config = rules.HttpSource(type="http", url=url, **{"timeout": "1s", "retries": 2, **options})
    return HttpJsonSource("api", config, backoff_factor=0.01)


@pytest.fixture
def sources() -> Iterator[list[HttpJsonSource]]:
    made: list[HttpJsonSource] = []
    yield made
    for source in made:
        source.close()


@pytest.fixture
def source_for(server: Server, sources: list[HttpJsonSource]) -> Callable[..., HttpJsonSource]:
    def build(path: str, **options: Any) -> HttpJsonSource:
        source = make_source(path if "://" in path else server.url(path), **options)
        sources.append(source)
        return source

    return build


# ---------------------------------------------------------------- values


def test_a_number_is_the_current_value_observed_now(server: Server, source_for: Any) -> None:
    server.routes["/m"] = json_route({"data": {"value": 4.25}})

    result = source_for("/m").fetch(kpi(), NOW)

    assert [(o.observed_at, o.value) for o in result.observations] == [(NOW, 4.25)]
    assert 0 <= result.duration < 1


def test_a_series_of_pairs_with_epoch_seconds(server: Server, source_for: Any) -> None:
    server.routes["/m"] = json_route({"points": [[1717243200, 3], [1717156800, 2.5]]})

    result = source_for("/m").fetch(kpi("points"), NOW)

    assert [(o.observed_at, o.value) for o in result.observations] == [
        (datetime(2024, 5, 31, 12, tzinfo=UTC), 2.5),
        (datetime(2024, 6, 1, 12, tzinfo=UTC), 3.0),
    ]
    assert result.current.value == 3.0


def test_a_series_of_objects_with_iso_timestamps(server: Server, source_for: Any) -> None:
    rows = [
        {"timestamp": "2024-05-31T00:00:00Z", "value": 1, "note": "ignored"},
        {"timestamp": "2024-06-01T02:00:00+02:00", "value": 2},
    ]
    server.routes["/m"] = json_route({"rows": rows})

    result = source_for("/m").fetch(kpi("rows"), NOW)

    assert [(o.observed_at, o.value) for o in result.observations] == [
        (datetime(2024, 5, 31, tzinfo=UTC), 1.0),
        (datetime(2024, 6, 1, tzinfo=UTC), 2.0),
    ]


def test_jmespath_can_reshape_the_response(server: Server, source_for: Any) -> None:
    server.routes["/m"] = json_route({"items": [{"t": 1717243200, "n": 7}]})

    result = source_for("/m").fetch(kpi("items[].[t, n]"), NOW)

    assert result.current.value == 7.0


# ---------------------------------------------------------------- the request


def test_source_and_kpi_params_are_merged_and_sent(server: Server, source_for: Any) -> None:
    server.routes["/m"] = json_route({"data": {"value": 1}})
    source = source_for("/m?fixed=yes", params={"team": "a", "period": "week"})

    source.fetch(kpi(period="month", metric="churn"), NOW)

    assert server.requests_to("/m")[0].query == {
        "fixed": ["yes"],
        "team": ["a"],
        "period": ["month"],
        "metric": ["churn"],
    }


def test_headers_and_bearer_auth_are_sent(server: Server, source_for: Any) -> None:
    server.routes["/m"] = json_route({"data": {"value": 1}})
    source = source_for("/m", headers={"X-Team": "growth"}, auth={"bearer": TOKEN})

    source.fetch(kpi(), NOW)

    headers = server.requests_to("/m")[0].headers
    assert headers["x-team"] == "growth"
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert headers["accept"] == "application/json"
    assert headers["user-agent"].startswith("kpiwatch/")


def test_basic_auth_is_sent(server: Server, source_for: Any) -> None:
    server.routes["/m"] = json_route({"data": {"value": 1}})
    source = source_for("/m", auth={"username": "ann", "password": "pw"})

    source.fetch(kpi(), NOW)

    expected = "Basic " + base64.b64encode(b"ann:pw").decode()
    assert server.requests_to("/m")[0].headers["authorization"] == expected


def test_post_sends_the_params_as_a_json_body(server: Server, source_for: Any) -> None:
    server.routes["/m"] = json_route({"data": {"value": 1}})
    source = source_for("/m", method="POST", params={"team": "a"})

    assert source.fetch(kpi(period="month"), NOW).current.value == 1.0

    seen = server.requests_to("/m")[0]
    assert seen.method == "POST"
    assert seen.query == {}
    assert json.loads(seen.body) == {"team": "a", "period": "month"}
    assert seen.headers["content-type"] == "application/json"


# ---------------------------------------------------------------- retries and statuses


def test_a_503_is_retried_until_it_succeeds(server: Server, source_for: Any) -> None:
    def flaky(handler: Handler, count: int) -> None:
        if count <= 2:
            handler.reply(503, b"busy", "text/plain")
        else:
            handler.reply(200, b'{"data": {"value": 9}}')

    server.routes["/m"] = flaky

    assert source_for("/m", retries=2).fetch(kpi(), NOW).current.value == 9.0
    assert len(server.requests_to("/m")) == 3


def test_post_is_retried_too(server: Server, source_for: Any) -> None:
    def flaky(handler: Handler, count: int) -> None:
        if count == 1:
            handler.reply(502, b"")
        else:
            handler.reply(200, b'{"data": {"value": 1}}')

    server.routes["/m"] = flaky

    assert source_for("/m", method="POST").fetch(kpi(), NOW).current.value == 1.0
    assert len(server.requests_to("/m")) == 2


def test_a_500_forever_fails_after_the_retries(server: Server, source_for: Any) -> None:
    server.routes["/m"] = lambda h, count: h.reply(500, b'{"error": "db down"}')

    with pytest.raises(SourceError, match=r"HTTP 500 Internal Server Error") as caught:
        source_for("/m", retries=2).fetch(kpi(), NOW)

    assert len(server.requests_to("/m")) == 3
    assert """'{"error": "db down"}'""" in str(caught.value)
    assert caught.value.source == "api"
    assert caught.value.kpi == "churn"


def test_a_404_is_not_retried(server: Server, source_for: Any) -> None:
    with pytest.raises(SourceError) as caught:
        source_for("/missing").fetch(kpi(), NOW)

    assert str(caught.value) == (
        f"source 'api': query for 'churn': {server.url('/missing')} "
        "answered HTTP 404 Not Found: 'no such metric'"
    )
    assert len(server.requests_to("/missing")) == 1


def test_an_error_body_is_shown_short_and_on_one_line(server: Server, source_for: Any) -> None:
    body = b"line one\n\n  line two " + b"x" * 1000
    server.routes["/m"] = lambda h, count: h.reply(400, body, "text/plain")

    with pytest.raises(SourceError) as caught:
        source_for("/m").fetch(kpi(), NOW)

    message = str(caught.value)
    assert "'line one line two xxx" in message
    assert message.endswith("x…'")
    assert "\n" not in message
    assert len(message) < 320


def test_a_retry_after_beyond_the_timeout_gives_up_at_once(server: Server, source_for: Any) -> None:
    def busy(handler: Handler, count: int) -> None:
        handler.send_response(503)
        handler.send_header("Retry-After", "30")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    server.routes["/m"] = busy
    start = time.monotonic()

    message = r"failed: HTTP 503 \(1 attempt; no time left to retry within the 1s timeout\)$"
    with pytest.raises(SourceError, match=message):
        source_for("/m").fetch(kpi(), NOW)

    assert time.monotonic() - start < 0.5
    assert len(server.requests_to("/m")) == 1


def test_connection_refused_is_a_source_error(source_for: Any) -> None:
    source = source_for(f"http://127.0.0.1:{free_port()}/m")

    with pytest.raises(SourceError, match=r"Connection refused") as caught:
        source.fetch(kpi(), NOW)

    assert not isinstance(caught.value, SourceTimeout)
    assert "object at 0x" not in str(caught.value)


def test_backoff_never_sleeps_past_the_timeout(sources: list[HttpJsonSource]) -> None:
    config = rules.HttpSource(
        type="http", url=f"http://127.0.0.1:{free_port()}/m", timeout="1s", retries=5
    )
    source = HttpJsonSource("api", config)  # the real backoff: 0s, 1s, 2s, ...
    sources.append(source)
    start = time.monotonic()

    with pytest.raises(SourceError, match=r"Connection refused \(2 attempts; no time left"):
        source.fetch(kpi(), NOW)

    assert time.monotonic() - start < 0.5


# ---------------------------------------------------------------- time


def test_a_server_slower_than_the_timeout_is_a_timeout(server: Server, source_for: Any) -> None:
    server.routes["/m"] = slow_route(3)
    start = time.monotonic()

    with pytest.raises(SourceTimeout, match=r"timed out after 0\.[0-9]s \(timeout 0\.5s\)"):
        source_for("/m", timeout="0.5s").fetch(kpi(), NOW)

    assert time.monotonic() - start < 1.5
    assert len(server.requests_to("/m")) == 1  # a read timeout is not retried


def drip(handler: Handler, count: int, *, length: bool = True) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    if length:
        handler.send_header("Content-Length", "1000000")
    handler.end_headers()
    for _ in range(100):  # one byte every 50 ms, for at most 5 s
        handler.wfile.write(b" ")
        handler.wfile.flush()
        time.sleep(0.05)


@pytest.mark.parametrize("length", [True, False])
def test_a_slow_drip_body_is_cut_off_at_the_deadline(
    server: Server, source_for: Any, length: bool
) -> None:
    server.routes["/m"] = lambda h, count: drip(h, count, length=length)
    start = time.monotonic()

    with pytest.raises(SourceTimeout, match=r"timed out after"):
        source_for("/m", timeout="1s").fetch(kpi(), NOW)

    assert time.monotonic() - start < 1.5


def test_headers_late_then_a_stall_still_ends_at_the_deadline(
    server: Server, source_for: Any
) -> None:
    def late(handler: Handler, count: int) -> None:
        time.sleep(0.7)
        handler.send_response(200)
        handler.send_header("Content-Length", "100")
        handler.end_headers()
        handler.wfile.flush()
        time.sleep(3)

    server.routes["/m"] = late
    start = time.monotonic()

    with pytest.raises(SourceTimeout):
        source_for("/m", timeout="1s").fetch(kpi(), NOW)

    assert time.monotonic() - start < 1.4


# ---------------------------------------------------------------- size


def test_a_declared_oversized_body_is_refused_upfront(server: Server, source_for: Any) -> None:
    server.routes["/m"] = lambda h, count: h.reply(200, b"[" + b"1," * 600 + b"1]")

    with pytest.raises(SourceError, match=r"response larger than 1 KiB limit \(max_bytes\)$"):
        source_for("/m", max_bytes=1024).fetch(kpi(), NOW)


def test_an_undeclared_oversized_body_is_cut_off(server: Server, source_for: Any) -> None:
    def endless(handler: Handler, count: int) -> None:
        handler.send_response(200)  # HTTP/1.0, no Content-Length: the body runs to the close
        handler.end_headers()
        handler.wfile.write(b"[" + b"1," * 6_000_000 + b"1]")  # 12 MB

    server.routes["/m"] = endless

    with pytest.raises(SourceError, match=r"response larger than 10 MiB limit \(max_bytes\)$"):
        source_for("/m").fetch(kpi("[0]"), NOW)


def test_the_limit_applies_to_the_decompressed_body(server: Server, source_for: Any) -> None:
    bomb = gzip.compress(b" " * 200_000 + b"1")

    def gzipped(handler: Handler, count: int) -> None:
        handler.send_response(200)
        handler.send_header("Content-Encoding", "gzip")
        handler.send_header("Content-Length", str(len(bomb)))
        handler.end_headers()
        handler.wfile.write(bomb)

    server.routes["/m"] = gzipped

    with pytest.raises(SourceError, match=r"larger than 100000 bytes limit"):
        source_for("/m", max_bytes=100_000).fetch(kpi("@"), NOW)
    assert source_for("/m").fetch(kpi("@"), NOW).current.value == 1.0


# ---------------------------------------------------------------- bad responses


def test_html_instead_of_json(server: Server, source_for: Any) -> None:
    page = b"<!doctype html>\n<html><body>Sign in</body></html>"
    server.routes["/m"] = lambda h, count: h.reply(200, page, "text/html; charset=utf-8")

    with pytest.raises(SourceError) as caught:
        source_for("/m").fetch(kpi(), NOW)

    assert str(caught.value).endswith(
        "expected JSON, got text/html: '<!doctype html> <html><body>Sign in</body></html>'"
    )


def test_an_empty_body(server: Server, source_for: Any) -> None:
    server.routes["/m"] = lambda h, count: h.reply(200, b"")

    with pytest.raises(SourceError, match=r"expected JSON, got an empty body"):
        source_for("/m").fetch(kpi(), NOW)


@pytest.mark.parametrize(
    ("body", "query", "message"),
    [
        (b'{"data": {}}', "data.churn", r"JMESPath 'data.churn' matched nothing in the response"),
        (b'{"data": null}', "data", r"JMESPath 'data' matched nothing"),
        (b'{"data": "abc"}', "data", r"value 'abc' at 'data' is not a number$"),
        (b'{"data": "42.5"}', "data", r"value '42.5' at 'data' is not a number \(text; wrap"),
        (b'{"data": true}', "data", r"value True at 'data' is a boolean, not a number"),
        (b'{"data": NaN}', "data", r"value nan at 'data' is not finite"),
        (b'{"data": -Infinity}', "data", r"value -inf at 'data' is not finite"),
        (b'{"data": {"a": 1}}', "data", r"expected a number, .* got an object with keys a"),
        (b'{"data": []}', "data", r"'data' is an empty list"),
        (b'{"data": [[1, "x"]]}', "data", r"item 0 of 'data': value 'x' is not a number"),
        (b'{"data": [["soon", 1]]}', "data", r"item 0 of 'data': timestamp 'soon' is not ISO"),
        (b'{"data": [{"ts": 1, "v": 2}]}', "data", r"item 0 of 'data': expected \[timestamp"),
    ],
)
def test_unusable_values_are_bad_values(
    server: Server, source_for: Any, body: bytes, query: str, message: str
) -> None:
    server.routes["/m"] = lambda h, count: h.reply(200, body)

    with pytest.raises(BadValueError, match=message):
        source_for("/m").fetch(kpi(query), NOW)


def test_an_invalid_jmespath_is_a_source_error(server: Server, source_for: Any) -> None:
    server.routes["/m"] = json_route({"x": 1})

    with pytest.raises(SourceError, match=r"invalid JMESPath 'x\[': incomplete expression$"):
        source_for("/m").fetch(kpi("x["), NOW)
    assert server.requests_to("/m") == []  # found before any request


def test_a_jmespath_failing_on_the_data_is_a_source_error(server: Server, source_for: Any) -> None:
    server.routes["/m"] = json_route({"x": ["a"]})

    with pytest.raises(SourceError, match=r"JMESPath 'sum\(x\)' failed: In function sum\(\)"):
        source_for("/m").fetch(kpi("sum(x)"), NOW)


# ---------------------------------------------------------------- secrets


def free_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def echo(handler: Handler, count: int) -> None:  # a server that repeats what it was sent
    text = f"denied {handler.path} {handler.headers.get('Authorization')}"
    handler.reply(500, text.encode(), "text/plain")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/echo?sig=SIG", "answered HTTP 500"),
        ("/slow?sig=SIG", "timed out"),
        ("/missing?sig=SIG&apikey=SIG", "answered HTTP 404"),
        ("closed", "Connection refused"),
    ],
)
def test_secrets_never_reach_error_text(
    server: Server, source_for: Any, path: str, expected: str
) -> None:
    server.routes["/echo"] = echo
    server.routes["/slow"] = slow_route(2)
    if path == "closed":
        path = f"http://user:pw-{QUERY_TOKEN}@127.0.0.1:{free_port()}/m?token={QUERY_TOKEN}"
    options = {"auth": {"bearer": TOKEN}, "params": {"token": QUERY_TOKEN}, "retries": 0}
    source = source_for(path.replace("SIG", QUERY_TOKEN), timeout="0.5s", **options)

    with pytest.raises(SourceError) as caught:
        source.fetch(kpi(), NOW)

    message = str(caught.value)
    assert expected in message
    assert TOKEN not in message
    assert QUERY_TOKEN not in message


# ---------------------------------------------------------------- the session


def test_repeated_fetches_then_close(server: Server, source_for: Any) -> None:
    server.routes["/m"] = json_route({"data": {"value": 1}})
    source = source_for("/m")
    for _ in range(3):
        source.fetch(kpi(), NOW)
    source.close()

    assert len(server.requests_to("/m")) == 3


def test_fetches_from_several_threads(server: Server, source_for: Any) -> None:
    server.routes["/m"] = lambda h, count: h.reply(200, json.dumps({"v": count}).encode())
    source = source_for("/m")
    values: list[float] = []
    lock = threading.Lock()

    def one() -> None:
        value = source.fetch(kpi("v"), NOW).current.value
        with lock:
            values.append(value)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(values) == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
