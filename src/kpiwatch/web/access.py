"""Who may read: a pure ASGI guard in front of every route, and the login form.

The guard decides by path, before any route runs (and so before any body is read):

* ``/metrics``, ``/healthz``, ``/readyz``: :func:`~kpiwatch.web.auth.may_scrape`.
* ``/login``, ``/logout``: open (the login form is how a browser gets in).
* writes under ``/api/v1`` (POST, PUT, PATCH, DELETE): left to the write rule, which
  the route class runs before the body is read; the API token grants reads anyway.
* everything else (the board, the KPI pages, ``GET /api/v1/...`` including the
  OpenAPI document): :func:`~kpiwatch.web.auth.may_read`. The document holds no
  data, but it names the version; with reads protected nothing is served to strangers.

Refused API requests get a 401 problem; refused pages a 303 to ``/login?next=...``.
"""

from __future__ import annotations

import json
from typing import Annotated
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Receive, Scope, Send

from kpiwatch.config.settings import Settings
from kpiwatch.web.auth import (
    SESSION_COOKIE,
    SESSION_SECONDS,
    bearer_token,
    may_read,
    may_scrape,
    reader_token_ok,
    reads_protected,
    session_cookie,
)
from kpiwatch.web.views import render

PROBES = ("/metrics", "/healthz", "/readyz")
OPEN = ("/login", "/logout")
API = "/api/"
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
NEEDS_READ_TOKEN = (
    "reading needs the header Authorization: Bearer <KPIWATCH_READ_TOKEN> or a login at /login"
)
NEEDS_METRICS_TOKEN = (
    "this endpoint needs the header Authorization: Bearer <KPIWATCH_METRICS_TOKEN>"
)
WRONG_LOGIN = "That token is not valid."
MAX_NEXT = 2000  # a longer "next" is not a page of ours


class AccessGuard:
    """Pure ASGI: answers 401 or 303 itself, so a refused request never reaches a route."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = Headers(scope=scope)
        token = bearer_token(headers.get("authorization"))
        refusal: Response | None = None
        if path in PROBES:
            if not may_scrape(self.settings, token):
                refusal = _unauthorized(NEEDS_METRICS_TOKEN)
        elif path in OPEN or (path.startswith(API) and scope["method"] in WRITE_METHODS):
            pass
        elif not may_read(self.settings, token, _cookie(headers)):
            if path.startswith(API):
                refusal = _unauthorized(NEEDS_READ_TOKEN)
            else:
                refusal = RedirectResponse(_login_url(scope), status_code=303)
        if refusal is None:
            await self.app(scope, receive, send)
        else:
            await refusal(scope, receive, send)


def _unauthorized(detail: str) -> Response:
    return Response(
        json.dumps({"detail": detail}), status_code=401, media_type="application/json",
        headers={"WWW-Authenticate": "Bearer"},
    )  # fmt: skip


def _cookie(headers: Headers) -> str | None:
    # the guard runs before any Request exists: parse as Request.cookies would (leniently)
    return cookie_parser(headers.get("cookie", "")).get(SESSION_COOKIE)


def _login_url(scope: Scope) -> str:
    target = scope["path"]
    query = scope.get("query_string", b"").decode("latin-1")
    if query:
        target += "?" + query
    return "/login?next=" + quote(target, safe="")


def local_path(target: str | None) -> str:
    """Where to go after the login: a path on this server, else ``/`` (no open redirect:
    ``//evil.example``, ``/\\evil.example``, ``https://evil.example`` all become ``/``)."""
    if (
        not target
        or len(target) > MAX_NEXT
        or not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target)
    ):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


def _secure(settings: Settings, request: Request) -> bool:
    return request.url.scheme == "https" or settings.base_url.startswith("https://")


def login_router(settings: Settings) -> APIRouter:
    """``GET /login`` (the form), ``POST /login`` (sets the session cookie), ``POST /logout``."""
    router = APIRouter(include_in_schema=False)

    def form(next_path: str, error: str | None, status_code: int) -> HTMLResponse:
        html = render("login.html.j2", title="Log in", next=next_path, error=error)
        return HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})

    @router.get("/login", response_class=HTMLResponse)
    def login_page(next: Annotated[str | None, Query(max_length=MAX_NEXT)] = None) -> Response:
        target = local_path(next)
        if not reads_protected(settings):
            return RedirectResponse(target, status_code=303)
        return form(target, None, 200)

    @router.post("/login")
    async def login(request: Request) -> Response:
        # the body limit (BodyLimit) bounds this read; parse_qs needs no multipart package
        try:
            fields = parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=10)
        except ValueError:  # more fields than the form has
            return form("/", "The form could not be read.", 400)
        target = local_path(fields.get("next", ["/"])[0])
        if not reads_protected(settings):
            return RedirectResponse(target, status_code=303)
        if not reader_token_ok(settings, fields.get("token", [""])[0]):
            return form(target, WRONG_LOGIN, 403)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            SESSION_COOKIE, session_cookie(settings), max_age=SESSION_SECONDS, path="/",
            httponly=True, samesite="strict", secure=_secure(settings, request),
        )  # fmt: skip
        return response

    @router.post("/logout")
    def logout(request: Request) -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(
            SESSION_COOKIE, path="/", httponly=True, samesite="strict",
            secure=_secure(settings, request),
        )  # fmt: skip
        return response

    return router
