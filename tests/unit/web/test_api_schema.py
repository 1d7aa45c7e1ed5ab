"""Schemathesis over the OpenAPI document: generated requests to every operation, with and
without the API token, against the real store and runner. Any 500 is a bug; so is an
answer the document does not describe (status code, content type or body)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, cast

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from schemathesis import HookContext
from schemathesis.checks import CheckFunction
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from kpiwatch.config.rules import RuleSet
from kpiwatch.config.settings import Settings
from kpiwatch.errors import SourceUnavailable
from kpiwatch.model import MatcherKind
from kpiwatch.runtime.runner import Runner
from kpiwatch.store.repository import Store
from kpiwatch.testing import FakeSource, FixedClock
from kpiwatch.web.api import api_router
from kpiwatch.web.context import WebContext
from kpiwatch.web.health import health_router

CHECKS: list[CheckFunction] = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _document_app() -> FastAPI:
    """An app that only serves the OpenAPI document: routes read the context when called,
    so this one is never used. (``schemathesis.pytest.from_fixture`` would let the fixture
    build the schema, but it fails on pytest 9: it sets ``Function._nodeid``.)"""
    unused = WebContext(
        store=cast(Store, None),
        rules=RuleSet,
        settings=Settings(),
        clock=FixedClock(),
        runner=cast(Runner, None),
        registry=CollectorRegistry(),
        heartbeat=lambda: None,
    )
    app = FastAPI(title="kpiwatch", openapi_url="/api/v1/openapi.json")
    app.include_router(health_router(unused))
    app.include_router(api_router(unused))
    return app


schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", _document_app())

# Random ids only reach the 404 branch: mix in the ids of the fixture's rules (conftest.py)
# so pushes, acks, annotations and silences succeed too.
KPI_IDS = ("signups", "churn", "latency", "conversion", "fresh")
KNOWN: dict[str, st.SearchStrategy[Any]] = {
    "kpi_id": st.sampled_from(KPI_IDS),
    "kpi": st.sampled_from(KPI_IDS),
    "team": st.sampled_from(("growth", "platform")),
    "label": st.sampled_from(("region=emea", "region=apac")),
    "silence_id": st.integers(1, 5),
    "duration": st.sampled_from(("30m", "2h", "1d", "1h30m")),
    "comment": st.sampled_from(("deploy", '<img src=x onerror="alert(1)">')),
    "text": st.sampled_from(("price change", "ünïcode ✓")),
    "at": st.sampled_from((None, "2026-03-01T07:00:00Z", "2026-03-02T09:00:00+01:00")),
}
MATCHERS = ("kpi", "team", "label")  # a silence takes exactly one


def _known_or_generated(values: Any) -> st.SearchStrategy[Any]:
    if not isinstance(values, dict):
        return st.just(values)
    return st.fixed_dictionaries({
        name: (KNOWN[name] | st.just(value)) if name in KNOWN else st.just(value)
        for name, value in values.items()
    })  # fmt: skip


@schema.hook
def flatmap_path_parameters(context: HookContext, path_parameters: Any) -> st.SearchStrategy[Any]:
    return _known_or_generated(path_parameters)


@schema.hook
def flatmap_query(context: HookContext, query: Any) -> st.SearchStrategy[Any]:
    return _known_or_generated(query)


@schema.hook
def flatmap_body(context: HookContext, body: Any) -> st.SearchStrategy[Any]:
    bodies: st.SearchStrategy[Any] = st.just(body)
    if isinstance(body, dict) and (given := [k for k in MATCHERS if k in body]):
        one = st.sampled_from(given).map(
            lambda keep: {k: v for k, v in body.items() if k not in MATCHERS or k == keep}
        )
        bodies = one | bodies
    return bodies.flatmap(_known_or_generated)


@pytest.fixture
def api_app(api_ctx: WebContext, make_api_app: Callable[..., FastAPI]) -> FastAPI:
    """The app under test: one store per operation, shared by its examples, so writes
    pile up as they would in production. The scheduler ticks (503 is for test_health)."""
    now = api_ctx.clock.now()
    store = api_ctx.store
    # something in every list the API returns: active, expired and ended silences, an
    # annotation and an ack (reads must fit the document with real rows, not only with [])
    for matcher, value, ends in (
        (MatcherKind.KPI, "churn", timedelta(hours=2)),
        (MatcherKind.TEAM, "growth", timedelta(days=1)),
        (MatcherKind.LABEL, "region=emea", timedelta(hours=1)),
    ):
        store.add_silence(matcher, value, now - timedelta(hours=3), now + ends - timedelta(hours=2),
                          "ann", "maintenance", now - timedelta(hours=3))  # fmt: skip
    store.expire_silence(1, now - timedelta(minutes=5))
    store.annotate("churn", now - timedelta(hours=1), "price change", "ben", now)
    churn = store.get_state("churn")
    assert churn is not None
    store.ack("churn", churn.since, "ben", "on it", now)
    # and churn blind, its source refusing connections: a verdict and a data_problem to read
    source = api_ctx.runner.workspace.sources["wh"]
    assert isinstance(source, FakeSource)
    source.set("churn", SourceUnavailable("connection refused", source="wh"))
    assert isinstance(api_ctx.clock, FixedClock)
    api_ctx.clock.set(now + timedelta(minutes=1))  # a later evaluation: an equal one is dropped
    api_ctx.runner.evaluate_kpi("churn")
    blind = store.get_state("churn")
    assert blind is not None
    assert blind.blind
    return make_api_app(dataclasses.replace(api_ctx, heartbeat=time.monotonic))


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),  # function-scoped fixtures are on purpose
)
def test_every_operation_keeps_its_contract(
    case: schemathesis.Case, api_app: FastAPI, auth: dict[str, str]
) -> None:
    case.call_and_validate(app=api_app, checks=CHECKS)  # any header it generated, or none
    case.call_and_validate(app=api_app, headers=auth, checks=CHECKS)
