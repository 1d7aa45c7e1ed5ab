"""Request bodies against the real server (uvicorn on a thread): refused by size before
they are read, refused by token before they are read, and never echoed back whole."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kpiwatch.store.types import AUTHOR_LENGTH, KPI_ID_LENGTH, MATCHER_VALUE_LENGTH
from kpiwatch.testing import RawAnswer, chunked, raw_request
from kpiwatch.web.app import create_app
from kpiwatch.web.context import WebContext
from kpiwatch.web.schemas import TEXT_LENGTH
from kpiwatch.web.server import WebServer

TOKEN = "s3cret-token"  # conftest's api_ctx
LIMIT = 65536  # KPIWATCH_MAX_BODY_BYTES' default
SILENCES = "/api/v1/silences"
Serve = Callable[..., tuple[str, int]]


@pytest.fixture
def serve(api_ctx: WebContext) -> Iterator[Serve]:
    """Starts the daemon's app on the daemon's server with some settings changed."""
    servers: list[WebServer] = []

    def start(**settings: Any) -> tuple[str, int]:
        ctx = dataclasses.replace(api_ctx, settings=api_ctx.settings.model_copy(update=settings))
        server = WebServer(create_app(ctx), "127.0.0.1", 0)
        server.start()
        servers.append(server)
        return "127.0.0.1", server.port

    yield start
    for server in servers:
        server.stop()


def _head(path: str, *lines: str, method: str = "POST") -> bytes:
    text = "\r\n".join([f"{method} {path} HTTP/1.1", "Host: kpiwatch", *lines, "", ""])
    return text.encode()


def _zeros(total: int, size: int = 65536) -> Iterator[bytes]:
    """``total`` bytes, generated as they are sent."""
    while total > 0:
        yield b"0" * min(size, total)
        total -= size


def _problem(answer: RawAnswer) -> str:
    assert answer.headers["content-type"] == "application/json"
    detail = json.loads(answer.body)["detail"]
    assert isinstance(detail, str)
    return detail


def test_a_declared_length_over_the_limit_is_413_before_a_byte_is_read(serve: Serve) -> None:
    address = serve()
    auth = f"Authorization: Bearer {TOKEN}"
    head = _head(SILENCES, auth, "Content-Type: application/json", f"Content-Length: {LIMIT + 1}")
    answer = raw_request(address, head, timeout=5)  # sends no body at all
    assert answer.status == 413
    assert "larger than 65536 bytes" in _problem(answer)
    assert answer.headers["connection"] == "close"


def test_every_route_has_the_limit(serve: Serve) -> None:
    address = serve(max_body_bytes=2048)
    for path, method in (("/", "GET"), ("/readyz", "GET"), ("/nowhere", "PUT"),
                         ("/login", "POST"), ("/api/v1/silences/1", "DELETE")):  # fmt: skip
        answer = raw_request(address, _head(path, "Content-Length: 2049", method=method), timeout=5)
        assert answer.status == 413, path


def test_a_chunked_body_is_cut_off_at_the_limit(serve: Serve) -> None:
    address = serve()
    auth = f"Authorization: Bearer {TOKEN}"
    head = _head(SILENCES, auth, "Content-Type: application/json", "Transfer-Encoding: chunked")
    total = 40 * 1024 * 1024
    answer = raw_request(address, head, chunked(_zeros(total)), timeout=5)
    assert answer.status == 413
    assert "KPIWATCH_MAX_BODY_BYTES" in _problem(answer)
    # the server hung up instead of reading it all (the rest sat in socket buffers)
    assert answer.sent < total / 2


def test_a_chunked_body_under_the_limit_is_used(serve: Serve) -> None:
    address = serve()
    body = json.dumps({"kpi": "churn", "duration": "1h", "comment": "x" * 1000}).encode()
    head = _head(SILENCES, f"Authorization: Bearer {TOKEN}", "Content-Type: application/json",
                 "Transfer-Encoding: chunked")  # fmt: skip
    answer = raw_request(address, head, chunked([body[:500], body[500:]]), timeout=5)
    assert answer.status == 201, answer.body


@pytest.mark.parametrize(
    ("settings", "auth", "status"),
    [
        ({"api_token": None}, f"Authorization: Bearer {TOKEN}", 403),
        ({}, "X-No-Auth: 1", 401),
        ({}, "Authorization: Bearer wrong", 401),
        ({}, "Authorization: Basic czNjcmV0LXRva2Vu", 401),
    ],
)
@pytest.mark.parametrize("path", [SILENCES, "/api/v1/kpis/signups/observations"])
def test_the_token_is_checked_before_the_body_is_read(
    serve: Serve, settings: dict[str, Any], auth: str, status: int, path: str
) -> None:
    """The head promises a body the client never sends: a server that waited to read
    it would say nothing within the timeout."""
    address = serve(**settings)
    head = _head(path, auth, "Content-Type: application/json", f"Content-Length: {LIMIT}")
    answer = raw_request(address, head, [b'{"value": '], timeout=3)
    assert answer.status == status
    assert "token" in _problem(answer).lower()
    if status == 401:
        assert answer.headers["www-authenticate"].startswith("Bearer")


def test_a_chunked_body_is_not_read_without_the_token(serve: Serve) -> None:
    address = serve()
    head = _head(SILENCES, "Content-Type: application/json", "Transfer-Encoding: chunked")
    answer = raw_request(address, head, [b"8000\r\n{"], timeout=3)  # 1 byte of a 32 KiB chunk
    assert answer.status == 401


# -- what a 422 says back --------------------------------------------------------------------


@pytest.fixture
def big_client(api_ctx: WebContext) -> TestClient:
    """Bodies up to 2 MB, so a 1 MB value reaches validation."""
    settings = api_ctx.settings.model_copy(update={"max_body_bytes": 2 * 1024 * 1024})
    return TestClient(create_app(dataclasses.replace(api_ctx, settings=settings)))


MEGABYTE = "A" * 1024 * 1024


@pytest.mark.parametrize(
    ("path", "body", "loc"),
    [
        ("/api/v1/kpis/churn/annotations", {"text": MEGABYTE}, ["body", "text"]),
        ("/api/v1/kpis/churn/observations", {"value": MEGABYTE}, ["body", "value"]),
        ("/api/v1/kpis/churn/observations", {"value": [MEGABYTE]}, ["body", "value"]),
        ("/api/v1/kpis/churn/ack", {"comment": "ok", MEGABYTE: 1}, ["body", MEGABYTE[:200]]),
    ],
    ids=["too-long-text", "string-for-a-number", "list-for-a-number", "unknown-key"],
)
def test_a_422_does_not_echo_a_megabyte(
    big_client: TestClient, auth: dict[str, str], path: str, body: Any, loc: list[str]
) -> None:
    response = big_client.post(path, json=body, headers=auth)
    assert response.status_code == 422
    assert len(response.content) < 2000, response.content[:300]
    [issue] = response.json()["detail"]
    assert issue["loc"][:1] == loc[:1]
    assert issue["loc"][1].startswith(loc[1])  # the key, cut to 200 characters
    assert issue["msg"]
    assert "input" not in issue or len(json.dumps(issue["input"])) < 300


def test_a_422_still_echoes_a_short_input(api_client: TestClient, auth: dict[str, str]) -> None:
    response = api_client.post("/api/v1/kpis/churn/observations", json={"value": "12"},
                               headers=auth)  # fmt: skip
    assert response.status_code == 422
    assert response.json()["detail"][0]["input"] == "12"


# -- the documented maximum lengths ----------------------------------------------------------

SILENCE = {"kpi": "churn", "duration": "1h", "comment": "deploy"}
FIELDS = [  # (path, schema, valid body, field, its maximum)
    (SILENCES, "SilenceIn", SILENCE, "comment", TEXT_LENGTH),
    (SILENCES, "SilenceIn", SILENCE, "author", AUTHOR_LENGTH),
    (SILENCES, "SilenceIn", SILENCE, "kpi", KPI_ID_LENGTH),
    (SILENCES, "SilenceIn", {**SILENCE, "kpi": None}, "team", MATCHER_VALUE_LENGTH),
    (SILENCES, "SilenceIn", {**SILENCE, "kpi": None}, "label", MATCHER_VALUE_LENGTH),
    (SILENCES, "SilenceIn", SILENCE, "duration", 32),
    ("/api/v1/kpis/churn/annotations", "AnnotationIn", {"text": "x"}, "text", TEXT_LENGTH),
    ("/api/v1/kpis/churn/annotations", "AnnotationIn", {"text": "x"}, "author", AUTHOR_LENGTH),
    ("/api/v1/kpis/churn/ack", "AckIn", {"comment": "x"}, "comment", TEXT_LENGTH),
    ("/api/v1/kpis/churn/ack", "AckIn", {"comment": "x"}, "author", AUTHOR_LENGTH),
]


@pytest.mark.parametrize(("path", "schema", "valid", "field", "maximum"), FIELDS)
def test_each_body_string_has_a_documented_maximum(
    api_client: TestClient, auth: dict[str, str],
    path: str, schema: str, valid: dict[str, Any], field: str, maximum: int,
) -> None:  # fmt: skip
    document = api_client.get("/api/v1/openapi.json").json()
    properties = document["components"]["schemas"][schema]["properties"]
    assert properties[field]["maxLength"] == maximum
    body = {k: v for k, v in valid.items() if v is not None}
    body[field] = "a=" + "b" * (maximum - 1)  # one character too long (and KEY=VALUE)
    response = api_client.post(path, json=body, headers=auth)
    assert response.status_code == 422, response.text
    issues = response.json()["detail"]
    assert any(
        i["loc"][:2] == ["body", field] and i["type"] == "string_too_long" for i in issues
    ), issues
