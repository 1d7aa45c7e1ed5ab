"""CsvTableSource downloading from a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import gzip
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pytest
from local_http import LocalServer, QuietHandler, serving

from kpiwatch.config import rules
from kpiwatch.errors import BadValueError, SourceError, SourceTimeout
from kpiwatch.sources.csv_file import CsvTableSource

NOW = datetime(2024, 6, 1, 12, tzinfo=UTC)
KPI = rules.Kpi(
    id="k", name="K", owner="ann", direction="higher_is_better", source="sheet", query="value"
)
SHEET = b'\xef\xbb\xbfdate,value\r\n2024-01-01,1\r\n2024-01-02,"1,250.5"\r\n'
LOGIN = b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>...</body></html>"


class Handler(QuietHandler):
    server: LocalServer
    default_type = "text/csv"

    def do_GET(self) -> None:
        route = ROUTES.get(urlsplit(self.path).path)
        if route is None:
            self.reply(404, b"not found", "text/plain")
        else:
            route(self)


def _redirect(handler: Handler) -> None:
    handler.send_response(307)
    handler.send_header("Location", "/sheet.csv")
    handler.send_header("Content-Length", "0")
    handler.end_headers()


def _chunked_without_length(handler: Handler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "text/csv")
    handler.end_headers()  # HTTP/1.0: the body ends when the connection closes
    handler.wfile.write(b"value\n" + b"1\n" * 5000)


def _gzipped(handler: Handler) -> None:
    body = gzip.compress(SHEET)
    handler.send_response(200)
    handler.send_header("Content-Type", "text/csv; charset=utf-8")
    handler.send_header("Content-Encoding", "gzip")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def _slow_headers(handler: Handler) -> None:
    handler.server.stop.wait(5)
    handler.reply(200, SHEET)


def _drip(handler: Handler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "text/csv")
    handler.send_header("Content-Length", "100000")
    handler.end_headers()
    handler.wfile.write(b"date,value\n")
    for _ in range(50):  # a line every 0.1 s: no single read waits a whole timeout
        if handler.server.stop.wait(0.1):
            return
        handler.wfile.write(b"2024-01-01,1\n")
        handler.wfile.flush()


ROUTES: dict[str, Callable[[Handler], None]] = {
    "/sheet.csv": lambda h: h.reply(200, SHEET),
    "/no-type.csv": lambda h: h.reply(200, SHEET, "application/octet-stream"),
    "/login": lambda h: h.reply(200, LOGIN, "text/html; charset=utf-8"),
    "/html-as-text": lambda h: h.reply(200, LOGIN, "text/plain"),
    "/forbidden": lambda h: h.reply(403, b"denied", "text/plain"),
    "/broken": lambda h: h.reply(500, b"oops", "text/plain"),
    "/bad.csv": lambda h: h.reply(200, b"value\nn/a\n"),
    "/redirect": _redirect,
    "/long": _chunked_without_length,
    "/gzip.csv": _gzipped,
    "/slow": _slow_headers,
    "/drip": _drip,
}


@pytest.fixture
def base_url() -> Iterator[str]:
    with serving(LocalServer(Handler)) as server:
        yield server.base_url


def _source(url: str, **options: Any) -> CsvTableSource:
    return CsvTableSource("sheet", rules.CsvSource(type="csv", url=url, **options))


def _fetch(url: str, **options: Any) -> list[tuple[datetime, float]]:
    source = _source(url, **options)
    try:
        result = source.fetch(KPI, NOW)
    finally:
        source.close()
    return [(o.observed_at, o.value) for o in result.observations]


def test_downloads_and_parses_a_series(base_url: str) -> None:
    assert _fetch(f"{base_url}/sheet.csv", timestamp_column="date") == [
        (datetime(2024, 1, 1, tzinfo=UTC), 1.0),
        (datetime(2024, 1, 2, tzinfo=UTC), 1250.5),
    ]


def test_downloads_the_last_row_as_current_value(base_url: str) -> None:
    assert _fetch(f"{base_url}/no-type.csv") == [(NOW, 1250.5)]


def test_follows_redirects_like_a_google_sheets_export(base_url: str) -> None:
    assert _fetch(f"{base_url}/redirect")[-1][1] == 1250.5


def test_a_gzipped_answer(base_url: str) -> None:
    assert _fetch(f"{base_url}/gzip.csv")[-1][1] == 1250.5


def test_the_source_is_reusable(base_url: str) -> None:
    source = _source(f"{base_url}/sheet.csv")
    assert [source.fetch(KPI, NOW).current.value for _ in range(3)] == [1250.5] * 3
    source.close()


def test_a_404_names_the_status_and_hides_the_query_string(base_url: str) -> None:
    with pytest.raises(SourceError) as caught:
        _fetch(f"{base_url}/gone.csv?key=s3cret")
    message = str(caught.value)
    assert f"{base_url}/gone.csv answered HTTP 404 Not Found" in message
    assert "s3cret" not in message


def test_a_403_hints_at_sharing(base_url: str) -> None:
    with pytest.raises(SourceError, match=r"answered HTTP 403 Forbidden \(is the sheet public\?\)"):
        _fetch(f"{base_url}/forbidden")


def test_a_500(base_url: str) -> None:
    with pytest.raises(SourceError, match="answered HTTP 500"):
        _fetch(f"{base_url}/broken")


@pytest.mark.parametrize("path", ["/login", "/html-as-text"])
def test_an_html_page_is_not_csv(base_url: str, path: str) -> None:
    with pytest.raises(SourceError) as caught:
        _fetch(f"{base_url}{path}")
    assert not isinstance(caught.value, BadValueError)
    assert "expected CSV, got text/html" in str(caught.value)


def test_a_bad_cell_in_a_download(base_url: str) -> None:
    with pytest.raises(BadValueError, match="row 2, column 'value': 'n/a' is not a number"):
        _fetch(f"{base_url}/bad.csv")


def test_content_length_over_max_bytes(base_url: str) -> None:
    with pytest.raises(SourceError, match=r"response larger than 20 bytes limit \(max_bytes\)"):
        _fetch(f"{base_url}/sheet.csv", max_bytes=20)


def test_a_body_without_length_is_cut_at_max_bytes(base_url: str) -> None:
    with pytest.raises(SourceError, match=r"response larger than 1 KiB limit \(max_bytes\)"):
        _fetch(f"{base_url}/long", max_bytes=1024)


def test_a_server_slow_to_answer_times_out(base_url: str) -> None:
    start = time.monotonic()
    with pytest.raises(SourceTimeout, match=r"timed out after 1\.\ds \(timeout 1s\)"):
        _fetch(f"{base_url}/slow", timeout="1s")
    assert time.monotonic() - start < 2


def test_a_server_dripping_the_body_times_out_at_the_deadline(base_url: str) -> None:
    start = time.monotonic()
    with pytest.raises(SourceTimeout, match=r"timed out after 1\.\ds \(timeout 1s\)"):
        _fetch(f"{base_url}/drip", timeout="1s")
    assert time.monotonic() - start < 2


def test_a_refused_connection() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(SourceError) as caught:
        _fetch(f"http://user:pw@127.0.0.1:{port}/sheet.csv")
    message = str(caught.value)
    assert f"reading http://127.0.0.1:{port}/sheet.csv failed:" in message
    assert "user" not in message
    assert ":pw" not in message


def test_library_messages_lose_the_query_string() -> None:
    with pytest.raises(SourceError) as caught:
        _fetch("ftp://example.invalid/sheet.csv?key=s3cret")
    assert "No connection adapters were found for 'ftp://example.invalid/sheet.csv?…'" in str(
        caught.value
    )
