"""/healthz follows the scheduler's heartbeat; /readyz asks the real database and the rules."""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from kpiwatch.config.rules import RuleSet
from kpiwatch.errors import ConfigError
from kpiwatch.store.repository import Store
from kpiwatch.web.context import WebContext

AppFactory = Callable[..., FastAPI]


def _client(make_api_app: AppFactory, ctx: WebContext, **changes: object) -> TestClient:
    return TestClient(make_api_app(dataclasses.replace(ctx, **changes)))


def test_healthz_ok_when_the_heartbeat_is_fresh(
    api_ctx: WebContext, make_api_app: AppFactory
) -> None:
    beat = time.monotonic() - 2.0
    response = _client(make_api_app, api_ctx, heartbeat=lambda: beat).get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert 2.0 <= body["heartbeat_age_seconds"] < 30.0


def test_healthz_fails_when_the_heartbeat_is_old(
    api_ctx: WebContext, make_api_app: AppFactory
) -> None:
    beat = time.monotonic() - 95.0
    client = _client(make_api_app, api_ctx, heartbeat=lambda: beat, heartbeat_max_age=30.0)
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["reason"] == "scheduler heartbeat is 95 s old (limit 30 s)"
    assert body["heartbeat_age_seconds"] >= 95.0


def test_healthz_fails_before_the_scheduler_started(
    api_ctx: WebContext, make_api_app: AppFactory
) -> None:
    response = _client(make_api_app, api_ctx, heartbeat=lambda: None).get("/healthz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "reason": "scheduler has not started",
        "heartbeat_age_seconds": None,
    }


def test_readyz_ok(api_client: TestClient) -> None:
    response = api_client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "rules": "ok"}}


def test_readyz_fails_when_the_sqlite_file_cannot_be_opened(
    tmp_path: Path, api_ctx: WebContext, make_api_app: AppFactory
) -> None:
    store = Store.open(f"sqlite:///{tmp_path}/gone/state.db")
    store.close()  # drop pooled connections: the next one must open the file again
    shutil.rmtree(tmp_path / "gone")  # ... in a directory that no longer exists
    response = _client(make_api_app, api_ctx, store=store).get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["rules"] == "ok"
    assert body["checks"]["database"].startswith("unavailable: ")
    assert "unable to open database file" in body["checks"]["database"]


def test_readyz_names_an_unreachable_server_without_its_password(
    api_ctx: WebContext, make_api_app: AppFactory
) -> None:
    # nothing listens on port 1: the connection is refused at once
    store = Store.open(
        "postgresql+psycopg://kpiwatch:hunter2@127.0.0.1:1/kpiwatch?connect_timeout=2",
        migrate=False,
    )
    try:
        response = _client(make_api_app, api_ctx, store=store).get("/readyz")
    finally:
        store.close()
    assert response.status_code == 503
    database = response.json()["checks"]["database"]
    assert database.startswith("unavailable: ")
    assert "127.0.0.1" in database  # says where it tried
    assert "hunter2" not in response.text


def test_readyz_fails_when_rules_cannot_be_read(
    api_ctx: WebContext, make_api_app: AppFactory
) -> None:
    def broken() -> RuleSet:
        raise ConfigError("rules/kpis.yaml:3:1: kpis[0]: unknown key 'tresholds'")

    response = _client(make_api_app, api_ctx, rules=broken).get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {
            "database": "ok",
            "rules": "not loaded: rules/kpis.yaml:3:1: kpis[0]: unknown key 'tresholds'",
        },
    }


@pytest.mark.parametrize("loaded", [None, {"kpis": []}])
def test_readyz_fails_when_rules_are_not_a_rule_set(
    api_ctx: WebContext, make_api_app: AppFactory, loaded: object
) -> None:
    response = _client(make_api_app, api_ctx, rules=lambda: loaded).get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["rules"].startswith("not loaded: got ")


def test_health_endpoints_are_in_the_openapi_document(api_client: TestClient) -> None:
    paths = api_client.get("/api/v1/openapi.json").json()["paths"]
    assert set(paths["/healthz"]["get"]["responses"]) == {"200", "503"}
    assert set(paths["/readyz"]["get"]["responses"]) == {"200", "503"}
