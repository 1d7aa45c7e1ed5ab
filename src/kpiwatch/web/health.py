"""``/healthz`` (is the daemon alive: the scheduler ticks) and ``/readyz`` (can it serve:
the database answers and rules are loaded), for systemd watchdogs, Docker and Kubernetes."""

from __future__ import annotations

import time
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from kpiwatch.config.rules import RuleSet
from kpiwatch.errors import redact
from kpiwatch.store.repository import Store
from kpiwatch.web.context import WebContext

OK = "ok"


class Health(BaseModel):
    status: Literal["ok"]
    heartbeat_age_seconds: float


class HealthProblem(BaseModel):
    status: Literal["unavailable"]
    reason: str = Field(examples=["scheduler heartbeat is 95 s old (limit 30 s)"])
    heartbeat_age_seconds: float | None


class Readiness(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(examples=[{"database": "ok", "rules": "ok"}])


def health_router(ctx: WebContext) -> APIRouter:
    """``GET /healthz`` and ``GET /readyz``; both 503 with the reason when not fine."""
    router = APIRouter(tags=["health"])

    @router.get(
        "/healthz",
        response_model=Health,
        responses={
            503: {"model": HealthProblem, "description": "The scheduler is stuck or not started"}
        },
        summary="Liveness: the scheduler ticked recently",
    )
    def healthz() -> Health | JSONResponse:
        beat = ctx.heartbeat()
        if beat is None:
            return _unavailable(HealthProblem(
                status="unavailable", reason="scheduler has not started",
                heartbeat_age_seconds=None,
            ))  # fmt: skip
        age = max(time.monotonic() - beat, 0.0)
        if age > ctx.heartbeat_max_age:
            reason = f"scheduler heartbeat is {age:.0f} s old (limit {ctx.heartbeat_max_age:g} s)"
            return _unavailable(HealthProblem(
                status="unavailable", reason=reason, heartbeat_age_seconds=round(age, 3)
            ))  # fmt: skip
        return Health(status="ok", heartbeat_age_seconds=round(age, 3))

    @router.get(
        "/readyz",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "A check failed; each is named"}},
        summary="Readiness: the database answers and rules are loaded",
    )
    def readyz() -> Readiness | JSONResponse:
        checks = {"database": _database(ctx.store), "rules": _rules(ctx)}
        if all(result == OK for result in checks.values()):
            return Readiness(status="ok", checks=checks)
        return _unavailable(Readiness(status="unavailable", checks=checks))

    return router


def _unavailable(body: HealthProblem | Readiness) -> JSONResponse:
    return JSONResponse(body.model_dump(mode="json"), status_code=503)


def _database(store: Store) -> str:
    # Store.ping() says only yes or no; an operator needs the driver's reason.
    try:
        with store.engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    except Exception as exc:
        return f"unavailable: {_first_line(exc)}"
    return OK


def _rules(ctx: WebContext) -> str:
    try:
        rules = ctx.rules()
    except Exception as exc:  # a readiness probe reports; it never raises
        return f"not loaded: {_first_line(exc)}"
    if not isinstance(rules, RuleSet):
        return f"not loaded: got {type(rules).__name__}, not a rule set"
    return OK


def _first_line(exc: BaseException) -> str:
    # SQLAlchemy appends SQL and a link; the first line says what failed. No URL passwords.
    lines = str(exc).strip().splitlines()
    return redact(lines[0]) if lines else type(exc).__name__
