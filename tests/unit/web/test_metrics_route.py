"""``GET /metrics`` through the app: negotiation, the fast path's bytes, a failing store."""

from __future__ import annotations

import dataclasses
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from kpiwatch.web.app import create_app
from kpiwatch.web.context import WebContext
from kpiwatch.web.exporter import Metrics, build_registry

PROMETHEUS_2 = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
PROMETHEUS_3 = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,*/*;q=0.2"
)


@pytest.fixture
def metrics_ctx(api_ctx: WebContext) -> WebContext:
    """The API fixture's store and rules, with the daemon's registry."""
    registry = build_registry(api_ctx.store, api_ctx.rules, Metrics(["email"]),
                              clock=api_ctx.clock, tz=ZoneInfo("UTC"))  # fmt: skip
    return dataclasses.replace(api_ctx, registry=registry)


@pytest.fixture
def client(metrics_ctx: WebContext) -> TestClient:
    return TestClient(create_app(metrics_ctx), raise_server_exceptions=False)


def test_without_accept_it_serves_the_text_format(
    client: TestClient, metrics_ctx: WebContext
) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert response.content == generate_latest(metrics_ctx.registry)
    names = {f.name for f in text_string_to_metric_families(response.text)}
    assert {"kpiwatch_kpi_value", "kpiwatch_kpi_status", "kpiwatch_build_info"} <= names


def test_prometheus_gets_openmetrics(client: TestClient, metrics_ctx: WebContext) -> None:
    response = client.get("/metrics", headers={"Accept": PROMETHEUS_2})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.content == generate_openmetrics(metrics_ctx.registry)
    assert response.content.endswith(b"# EOF\n")
    response = client.get("/metrics", headers={"Accept": PROMETHEUS_3})
    encoder, content_type = choose_encoder(PROMETHEUS_3)
    assert response.headers["content-type"] == content_type
    assert response.content == encoder(metrics_ctx.registry)


def test_a_state_saved_in_the_store_shows_at_the_next_request(
    client: TestClient, metrics_ctx: WebContext
) -> None:
    line = 'kpiwatch_kpi_value{kpi="churn",team="growth"} '
    assert line + "6.2\n" in client.get("/metrics").text
    churn = metrics_ctx.store.get_state("churn")
    assert churn is not None
    metrics_ctx.store.save_state(churn._replace(value=9.75))  # as another replica would
    assert line + "9.75\n" in client.get("/metrics").text


def test_a_store_failure_is_a_500_without_a_partial_answer(
    client: TestClient, metrics_ctx: WebContext
) -> None:
    assert client.get("/metrics").status_code == 200
    with metrics_ctx.store.engine.begin() as connection:
        connection.execute(sa.text("DROP TABLE kpi_state"))
    for accept in ("", PROMETHEUS_2):
        response = client.get("/metrics", headers={"Accept": accept})
        assert response.status_code == 500
        assert "kpiwatch_" not in response.text


def test_another_registry_is_served_as_its_encoder_writes_it(api_ctx: WebContext) -> None:
    registry = CollectorRegistry()
    Gauge("other_gauge", "not kpiwatch's", registry=registry).set(3)
    app = create_app(dataclasses.replace(api_ctx, registry=registry))
    response = TestClient(app).get("/metrics")
    assert response.content == generate_latest(registry)
