"""Redirects to another origin are refused by every downloading source, unless allowed.

Two real servers on 127.0.0.1 (two ports: two origins): the first redirects to
the second. The second must receive nothing, the source's secret header least
of all, unless the source sets ``follow_redirects: true``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
from local_http import LocalServer, QuietHandler, serving

from kpiwatch.config import rules
from kpiwatch.errors import SourceError
from kpiwatch.sources.csv_file import CsvTableSource
from kpiwatch.sources.http import HttpJsonSource
from kpiwatch.sources.prometheus import PrometheusQuerySource

NOW = datetime(2024, 6, 1, 12, tzinfo=UTC)
SECRET = "x-api-key-s3cr3t"


class Handler(QuietHandler):
    """``/hop/...`` redirects within this server; with ``redirect`` set, every other
    path redirects there; otherwise a JSON, CSV or Prometheus answer by path."""

    server: Server

    def do_GET(self) -> None:
        self.server.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        if self.path.startswith("/hop/"):
            self._redirect(self.path.removeprefix("/hop"))
        elif self.server.redirect is not None:
            self._redirect(self.server.redirect + self.path)
        elif self.path.endswith(".csv"):
            self.reply(200, b"value\n7\n", "text/csv")
        elif urlsplit(self.path).path == "/api/v1/query":
            result = {"resultType": "scalar", "result": [time.time(), "5"]}
            self.reply(200, json.dumps({"status": "success", "data": result}).encode())
        else:
            self.reply(200, json.dumps({"v": self.server.value}).encode())

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()


class Server(LocalServer):
    def __init__(self, value: int) -> None:
        super().__init__(Handler)
        self.value = value
        self.redirect: str | None = None
        self.seen: list[tuple[str, dict[str, str]]] = []


@pytest.fixture
def landing() -> Iterator[Server]:
    with serving(Server(value=2)) as server:
        yield server


@pytest.fixture
def origin(landing: Server) -> Iterator[Server]:
    with serving(Server(value=1)) as server:
        server.redirect = landing.base_url
        yield server


def _kpi(source: str, query: str) -> rules.Kpi:
    return rules.Kpi(
        id="k", name="K", owner="ann", direction="higher_is_better", source=source, query=query
    )


def _http(url: str, **options: object) -> HttpJsonSource:
    config = rules.HttpSource(
        type="http", url=url, headers={"X-Api-Key": SECRET}, retries=0, **options
    )
    return HttpJsonSource("api", config)


def test_http_refuses_a_redirect_to_another_origin(origin: Server, landing: Server) -> None:
    source = _http(f"{origin.base_url}/data?token=qs-secret")
    with pytest.raises(SourceError) as caught:
        source.fetch(_kpi("api", "v"), NOW)
    assert str(caught.value) == (
        f"source 'api': query for 'k': request to {origin.base_url}/data failed: "
        f"redirected to {landing.base_url}, another origin: not followed "
        "(set follow_redirects: true on the source to allow it)"
    )
    assert landing.seen == []  # neither the request nor the header reached it
    assert [path for path, _ in origin.seen] == ["/data?token=qs-secret"]


def test_http_follows_another_origin_when_allowed(origin: Server, landing: Server) -> None:
    source = _http(f"{origin.base_url}/data", follow_redirects=True)
    assert source.fetch(_kpi("api", "v"), NOW).current.value == 2
    assert [(path, headers["x-api-key"]) for path, headers in landing.seen] == [("/data", SECRET)]


def test_http_follows_a_redirect_within_its_origin(landing: Server) -> None:
    source = _http(f"{landing.base_url}/hop/data")
    assert source.fetch(_kpi("api", "v"), NOW).current.value == 2
    assert [path for path, _ in landing.seen] == ["/hop/data", "/data"]


def test_a_same_origin_hop_then_another_origin_is_refused(
    origin: Server, landing: Server
) -> None:
    source = _http(f"{origin.base_url}/hop/data")
    with pytest.raises(SourceError, match=f"redirected to {landing.base_url}, another origin"):
        source.fetch(_kpi("api", "v"), NOW)
    assert [path for path, _ in origin.seen] == ["/hop/data", "/data"]
    assert landing.seen == []


def test_csv_url_follows_a_published_sheet_unless_told_not_to(
    origin: Server, landing: Server
) -> None:
    config = rules.CsvSource(
        type="csv", url=f"{origin.base_url}/sheet.csv", follow_redirects=False
    )
    with pytest.raises(SourceError) as caught:
        CsvTableSource("sheet", config).fetch(_kpi("sheet", "value"), NOW)
    assert f"redirected to {landing.base_url}, another origin: not followed" in str(caught.value)
    assert landing.seen == []
    allowed = rules.CsvSource(type="csv", url=config.url)  # the default: no credentials to leak
    assert CsvTableSource("sheet", allowed).fetch(_kpi("sheet", "value"), NOW).current.value == 7
    assert [path for path, _ in landing.seen] == ["/sheet.csv"]


def test_prometheus_refuses_a_redirect_to_another_origin(origin: Server, landing: Server) -> None:
    config = rules.PrometheusSource(
        type="prometheus", url=origin.base_url, headers={"X-Scope-OrgID": SECRET}
    )
    with pytest.raises(SourceError) as caught:
        PrometheusQuerySource("prom", config).fetch(_kpi("prom", "up"), NOW)
    assert f"redirected to {landing.base_url}, another origin: not followed" in str(caught.value)
    assert landing.seen == []
    allowed = PrometheusQuerySource("prom", config.model_copy(update={"follow_redirects": True}))
    assert allowed.fetch(_kpi("prom", "up"), NOW).current.value == 5
    assert [headers["x-scope-orgid"] for _, headers in landing.seen] == [SECRET]
