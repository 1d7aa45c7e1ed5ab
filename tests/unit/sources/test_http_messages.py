"""How the HTTP sources show URLs, bodies and limits in messages (kpiwatch.sources.web)."""

from __future__ import annotations

import pytest
import requests
from urllib3.connection import HTTPConnection
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import MaxRetryError, NewConnectionError

from kpiwatch.sources.web import URL_QUERY, describe, shown_url, size, snippet


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://api.example.com/v1/kpis?token=abc#frag", "https://api.example.com/v1/kpis"),
        ("https://ann:pw@api.example.com:8443/x", "https://api.example.com:8443/x"),
        ("http://[::1]:8080/m?k=v", "http://[::1]:8080/m"),
        ("localhost:8080/m?k=v", "localhost:8080/m"),
    ],
)
def test_urls_are_shown_without_credentials_or_query(url: str, shown: str) -> None:
    assert shown_url(url) == shown


def test_query_strings_in_library_text_are_hidden() -> None:
    text = "Invalid URL 'https://h/p?sig=abc&x=1': bad; see /docs?q=1 and what?"
    assert URL_QUERY.sub(r"\1?…", text) == "Invalid URL 'https://h/p?…': bad; see /docs?… and what?"


def test_describe_keeps_the_innermost_cause_only() -> None:
    connection = HTTPConnection("h", 80)
    inner = NewConnectionError(connection, "Failed to establish a new connection: refused")
    outer = requests.ConnectionError(
        MaxRetryError(HTTPConnectionPool("h"), "/x?token=abc", reason=inner)
    )
    assert describe(outer) == "Failed to establish a new connection: refused"


def test_snippets_are_one_line_and_short() -> None:
    assert snippet(b"a\n  b\tc") == "'a b c'"
    assert snippet(b"\xff\xfeok") == "'\ufffd\ufffdok'"
    assert snippet(b"x" * 500) == repr("x" * 200 + "…")


@pytest.mark.parametrize(
    ("limit", "text"),
    [(10 * 1024 * 1024, "10 MiB"), (1024, "1 KiB"), (1 << 30, "1 GiB"), (1000, "1000 bytes")],
)
def test_sizes(limit: int, text: str) -> None:
    assert size(limit) == text
