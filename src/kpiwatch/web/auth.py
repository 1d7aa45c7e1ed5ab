"""Who may do what, by token.

* Writes: ``Authorization: Bearer $KPIWATCH_API_TOKEN``. With no token configured
  every write is refused (403): a fresh install is read-only until someone chooses
  a token. A missing or wrong token is a 401 that does not say which of the two.

The rule is one function here; the route class and the dependency call it.
"""

from __future__ import annotations

import hmac
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
