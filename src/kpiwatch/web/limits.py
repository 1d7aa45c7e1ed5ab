"""Bounds on what the server reads and what it says back.

:class:`BodyLimit` is a pure ASGI middleware: it refuses a request whose
``Content-Length`` is over ``KPIWATCH_MAX_BODY_BYTES`` before the app runs, and
counts a body without one (chunked) as it streams, stopping at the limit. It
wraps ``receive`` instead of buffering, so no body is ever held whole in memory
by us (uvicorn itself buffers at most 64 KiB before pausing the socket).

:func:`bounded_errors` cuts pydantic's validation errors so a 422 never echoes a
large input back.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ECHO_CHARS = 200  # a 422 quotes at most this much of any one value


class BodyTooLarge(HTTPException):
    """An HTTPException, so FastAPI's handlers (which re-raise HTTPExceptions, but turn
    any other error while parsing a body into a 400) answer it as a 413 problem."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            status_code=413,
            detail=f"the request body is larger than {limit} bytes (KPIWATCH_MAX_BODY_BYTES)",
            # the rest of the body is unread: closing spares reading it just to discard it
            headers={"Connection": "close"},
        )


class BodyLimit:
    """Refuses request bodies over ``max_bytes`` with 413, without reading them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _send_problem(scope, receive, send, BodyTooLarge(self.max_bytes))
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge as exc:
            # raised outside a route's exception handling (e.g. by another middleware)
            if started:
                raise
            await _send_problem(scope, receive, send, exc)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP server refuses a malformed length before we run
    return None


async def _send_problem(scope: Scope, receive: Receive, send: Send, exc: HTTPException) -> None:
    response = JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)
    await response(scope, receive, send)  # a plain response: it never calls receive


def bounded_errors(errors: Sequence[Any]) -> list[Any]:
    """Pydantic's error list with every long string cut to ``ECHO_CHARS`` and a long
    non-string ``input`` (an object, a list) dropped: ``loc``, ``msg`` and ``type``
    still say what is wrong and where."""
    bounded: list[Any] = []
    for error in errors:
        if not isinstance(error, dict):
            bounded.append(_cut(error))
            continue
        item = {key: _cut(value) for key, value in error.items() if key != "input"}
        if "input" in error:
            value = error["input"]
            if isinstance(value, str) or len(json.dumps(value, default=str)) <= ECHO_CHARS:
                item["input"] = _cut(value)
        bounded.append(item)
    return bounded


def _cut(value: Any) -> Any:
    if isinstance(value, str):
        if len(value) <= ECHO_CHARS:
            return value
        return f"{value[:ECHO_CHARS]}… ({len(value)} characters)"
    if isinstance(value, dict):
        return {key: _cut(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_cut(item) for item in value]
    return value
