"""Who may do what, by token.

* Writes: ``Authorization: Bearer $KPIWATCH_API_TOKEN``. With no token configured
  every write is refused (403): a fresh install is read-only until someone chooses
  a token. A missing or wrong token is a 401 that does not say which of the two.
* Reads (the board, the KPI pages, ``GET /api/v1/...``): open unless
  ``KPIWATCH_READ_TOKEN`` is set; then the read token or the API token, as a bearer
  header or as the session cookie the login form sets.
* ``/metrics``, ``/healthz``, ``/readyz``: open unless ``KPIWATCH_METRICS_TOKEN`` is set.

Each rule is one function here; the ASGI guard and the route class call them.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import SecretStr

from kpiwatch.config.settings import Settings
from kpiwatch.web.schemas import Problem

WRITES_DISABLED = "writes are disabled: set KPIWATCH_API_TOKEN to enable them"
NEEDS_TOKEN = "this endpoint needs the header Authorization: Bearer <KPIWATCH_API_TOKEN>"
BAD_TOKEN = "invalid bearer token"

SESSION_COOKIE = "kpiwatch_session"
SESSION_SECONDS = 30 * 86_400  # a browser logs in again after a month

# auto_error=False: the 401/403 wording is ours; the scheme still appears in OpenAPI
_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="apiToken",
    description="The value of KPIWATCH_API_TOKEN; every write endpoint needs it.",
)

WRITER_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {
        "model": Problem,
        "description": "No bearer token, or the wrong one",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    },
    403: {"model": Problem, "description": "Writes are disabled (no KPIWATCH_API_TOKEN set)"},
}


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (as FastAPI's HTTPBearer
    reads it), or None for no header or another scheme."""
    scheme, token = get_authorization_scheme_param(authorization)
    if not token or scheme.lower() != "bearer":
        return None
    return token


def _secret(value: SecretStr | None) -> str:
    # an empty token would let an empty header through: treat it as unset
    return value.get_secret_value() if value is not None else ""


def same_token(given: str | None, expected: str) -> bool:
    """Constant-time comparison; an unset (empty) expected token matches nothing."""
    if given is None or not expected:
        return False
    # bytes: compare_digest refuses non-ASCII str, and header values may be any Latin-1
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def check_writer(settings: Settings, token: str | None) -> None:
    """The write rule: raises 403 when writes are disabled, 401 for a missing or wrong
    token. Called before the body is read (:class:`kpiwatch.web.schemas.JsonRoute`) and
    again as the OpenAPI-visible dependency."""
    expected = _secret(settings.api_token)
    if not expected:
        raise HTTPException(status_code=403, detail=WRITES_DISABLED)
    if token is None:  # no header, or not the Bearer scheme
        raise HTTPException(
            status_code=401, detail=NEEDS_TOKEN, headers={"WWW-Authenticate": "Bearer"}
        )
    if not same_token(token, expected):
        raise HTTPException(
            status_code=401,
            detail=BAD_TOKEN,
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )


class Writer:
    """The dependency of every write route. :class:`~kpiwatch.web.schemas.JsonRoute`
    finds it among a route's dependencies and runs :func:`check_writer` before the body
    is read (FastAPI reads and parses a body before it solves dependencies)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def __call__(
        self, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> None:
        check_writer(self.settings, credentials.credentials if credentials else None)

    def before_body(self, request: Request) -> None:
        check_writer(self.settings, bearer_token(request.headers.get("authorization")))


def require_writer(settings: Settings) -> Writer:
    return Writer(settings)


# ---------------------------------------------------------------- reads


def reads_protected(settings: Settings) -> bool:
    return bool(_secret(settings.read_token))


def _session_key(settings: Settings) -> bytes:
    # derived from both tokens that grant reads: rotating either ends every session
    material = f"{_secret(settings.read_token)}\0{_secret(settings.api_token)}"
    return hashlib.sha256(b"kpiwatch-session\0" + material.encode("utf-8")).digest()


def _sign(settings: Settings, issued: int) -> str:
    return hmac.new(_session_key(settings), str(issued).encode(), hashlib.sha256).hexdigest()


def session_cookie(settings: Settings, now: float | None = None) -> str:
    """``<issued unix time>.<HMAC>``: the cookie holds no token, only proof of a login."""
    issued = int(time.time() if now is None else now)
    return f"{issued}.{_sign(settings, issued)}"


def _valid_session(settings: Settings, cookie: str | None, now: float) -> bool:
    issued_text, _, mac = (cookie or "").partition(".")
    if not issued_text.isascii() or not issued_text.isdigit() or len(issued_text) > 12:
        return False
    issued = int(issued_text)
    if not issued <= now < issued + SESSION_SECONDS:
        return False
    return hmac.compare_digest(mac.encode("utf-8"), _sign(settings, issued).encode())


def reader_token_ok(settings: Settings, token: str | None) -> bool:
    """The read token or the API token (which grants reads too)."""
    return same_token(token, _secret(settings.read_token)) or same_token(
        token, _secret(settings.api_token)
    )


def may_read(settings: Settings, token: str | None, cookie: str | None) -> bool:
    """The read rule: open without a read token; else a token that grants reads, or a
    session cookie from the login form."""
    if not reads_protected(settings):
        return True
    return reader_token_ok(settings, token) or _valid_session(settings, cookie, time.time())


def may_scrape(settings: Settings, token: str | None) -> bool:
    """The rule for ``/metrics``, ``/healthz`` and ``/readyz``."""
    expected = _secret(settings.metrics_token)
    return not expected or same_token(token, expected)
