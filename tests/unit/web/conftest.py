"""A web context over a real SQLite store filled by the real runner, for the API and health.

``test_pages.py`` has its own ``ctx`` fixture; these are named ``api_*`` so the two
never shadow each other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from kpiwatch.config.settings import Settings
from kpiwatch.model import Observation
from kpiwatch.runtime.runner import Runner
from kpiwatch.store.repository import Store
from kpiwatch.testing import FakeSource, FixedClock, fake_workspace
from kpiwatch.web.api import api_router
from kpiwatch.web.context import WebContext
from kpiwatch.web.health import health_router

TOKEN = "s3cret-token"
NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
API_RULES = """
sources:
  wh: {type: sql, url: "sqlite://"}
teams:
  growth: {}
  platform: {}
kpis:
  - id: signups
    name: Weekly signups
    owner: ava@example.com
    team: growth
    direction: higher_is_better
    source: push
    thresholds: {yellow: 100, red: 80}
    labels: {region: emea}
  - id: churn
    name: Churn rate
    owner: ben@example.com
    team: growth
    unit: "%"
    direction: lower_is_better
    source: wh
    query: SELECT 1
    thresholds: {yellow: 3, red: 5}
  - id: latency
    name: API latency p95
    owner: cy@example.com
    team: platform
    unit: ms
    direction: lower_is_better
    source: push
    thresholds: {yellow: 300, red: 500}
  - id: conversion
    name: Trial conversion
    owner: dan@example.com
    team: growth
    unit: "%"
    direction: higher_is_better
    source: push
    for: 2
    thresholds: {yellow: 2, red: 1}
    target: {value: 5, by: 2026-12-31}
    trend:
      worsening_streak: 3
      change: {max_pct: 20, over: 7d}
      off_track: yellow
  - id: fresh
    name: Never evaluated
    owner: eve@example.com
    direction: higher_is_better
    source: push
"""


@pytest.fixture
def api_ctx(tmp_path: Path) -> Iterator[WebContext]:
    """churn red (was green), signups green, latency yellow, conversion (target, trends,
    hysteresis) with a month of history, fresh never evaluated."""
    store = Store.open(f"sqlite:///{tmp_path}/state.db")
    clock = FixedClock(NOW - timedelta(days=1))
    source = FakeSource("wh")
    workspace = fake_workspace(API_RULES, store.latest, {"wh": source})
    loaded = workspace.loaded
    runner = Runner(store, clock, workspace, tz=ZoneInfo("UTC"), review_time=time(9, 0))
    store.add_observations(
        Observation("signups", NOW - timedelta(days=30 - day), 120.0 + day) for day in range(30)
    )
    store.add_observations(
        Observation("conversion", NOW - timedelta(days=30 - day), 3.0 + day % 4 / 10)
        for day in range(30)
    )
    store.add_observations([Observation("latency", NOW - timedelta(days=1), 340.0)])
    source.set("churn", 2.5)
    for kpi_id in ("signups", "churn", "latency", "conversion"):
        runner.evaluate_kpi(kpi_id)
    clock.set(NOW)
    source.set("churn", 6.2)
    runner.evaluate_kpi("churn")
    yield WebContext(
        store=store,
        rules=lambda: loaded.rules,
        settings=Settings(api_token=SecretStr(TOKEN), timezone="UTC"),  # init beats env and file
        clock=clock,
        runner=runner,
        registry=CollectorRegistry(),
        heartbeat=lambda: None,
    )
    store.close()


def _build_app(ctx: WebContext, **settings: object) -> FastAPI:
    """What ``create_app`` serves of the API (health and ``/api/v1``), optionally with
    other settings (``api_token=None``)."""
    if settings:
        ctx = dataclasses.replace(ctx, settings=ctx.settings.model_copy(update=settings))
    app = FastAPI(title="kpiwatch", openapi_url="/api/v1/openapi.json")
    app.include_router(health_router(ctx))
    app.include_router(api_router(ctx))
    return app


@pytest.fixture
def make_api_app() -> Callable[..., FastAPI]:
    return _build_app


@pytest.fixture
def api_client(api_ctx: WebContext) -> TestClient:
    return TestClient(_build_app(api_ctx))


@pytest.fixture
def auth() -> dict[str, str]:
    """The headers of a client that knows the API token."""
    return {"Authorization": f"Bearer {TOKEN}"}
