"""Who may write through the API: whoever sends ``Authorization: Bearer $KPIWATCH_API_TOKEN``.

With no token configured every write is refused (403): a fresh install is
read-only until someone chooses a token. A missing or wrong token is a 401
that does not say which of the two it was.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from kpiwatch.web.context import WebContext
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


def require_writer(ctx: WebContext) -> Callable[..., None]:
    """A dependency for write endpoints that checks the bearer token against the settings."""

    def writer(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        configured = ctx.settings.api_token
        expected = configured.get_secret_value() if configured is not None else ""
        if not expected:  # an empty token would let an empty header through: treat as unset
            raise HTTPException(status_code=403, detail=WRITES_DISABLED)
        if credentials is None:  # no header, or not the Bearer scheme
            raise HTTPException(
                status_code=401, detail=NEEDS_TOKEN, headers={"WWW-Authenticate": "Bearer"}
            )
        # bytes: compare_digest refuses non-ASCII str, and header values may be any Latin-1
        given = credentials.credentials.encode("utf-8")
        if not hmac.compare_digest(given, expected.encode("utf-8")):
            raise HTTPException(
                status_code=401,
                detail=BAD_TOKEN,
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )

    return writer
