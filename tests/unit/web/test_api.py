"""The JSON API against a real SQLite store and the real runner: reads, writes, auth."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import fastapi.routing
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr
from starlette.routing import Route

from kpiwatch.errors import SourceError, SourceUnavailable
from kpiwatch.model import Status
from kpiwatch.overview import overview
from kpiwatch.store.repository import Store
from kpiwatch.testing import FakeSource, FixedClock
from kpiwatch.web.auth import BAD_TOKEN, NEEDS_TOKEN, WRITES_DISABLED
from kpiwatch.web.context import WebContext

AppFactory = Callable[..., FastAPI]
NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # the fixture's clock
XSS = '<script>alert("x")</script><img src=x onerror=alert(1)> & "quotes"'
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def _status_json(ctx: WebContext) -> list[dict[str, Any]]:
    """What ``kpiwatch status --json`` prints for this store (the CLI's own steps)."""
    states = ctx.store.states()
    acks = {kpi_id: ack for kpi_id, state in states.items()
            if (ack := ctx.store.ack_for(kpi_id, state.since)) is not None}  # fmt: skip
    return [row.as_json() for row in overview(ctx.rules(), states, acks)]


# -- reads ----------------------------------------------------------------------------


def test_kpis_are_the_status_json_objects(api_client: TestClient, api_ctx: WebContext) -> None:
    api_ctx.store.ack("churn", NOW, "ben", "on it", NOW)
    response = api_client.get("/api/v1/kpis")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == _status_json(api_ctx)
    by_id = {k["id"]: k for k in response.json()}
    assert [k["id"] for k in response.json()] == [
        "signups",
        "churn",
        "latency",
        "conversion",
        "fresh",
    ]
    assert by_id["churn"]["status"] == "red"
    assert by_id["churn"]["ack"] == "ben: on it"
    assert by_id["latency"]["status"] == "yellow"
    assert by_id["fresh"]["reasons"] == ["not evaluated yet"]


def _wh(ctx: WebContext) -> FakeSource:
    """The fixture's warehouse (churn's source), to make it fail."""
    source = ctx.runner.workspace.sources["wh"]
    assert isinstance(source, FakeSource)
    return source


def test_a_blind_kpi_has_its_verdict_and_data_problem_as_in_status_json(
    api_client: TestClient, api_ctx: WebContext
) -> None:
    # wh refuses the connection: churn is blind, its red verdict and 6.2 kept; wh's
    # incident is its data owner's (on-call), so churn's owner is not told yet
    _wh(api_ctx).set("churn", SourceUnavailable("connection refused", source="wh"))
    api_ctx.clock.set(NOW + timedelta(minutes=5))
    api_ctx.runner.evaluate_kpi("churn")
    listed = api_client.get("/api/v1/kpis").json()
    assert listed == _status_json(api_ctx)
    churn = {k["id"]: k for k in listed}["churn"]
    assert (churn["status"], churn["verdict"], churn["value"]) == ("unknown", "red", 6.2)
    assert churn["since"] == NOW.isoformat()  # the red episode's
    assert churn["data_problem"] == {
        "since": "2026-03-02T08:05:00+00:00",
        "reason": "source 'wh': connection refused",
        "scope": "source",
        "source": "wh",
        "owner_told_at": None,
    }
    assert {k["id"]: k for k in listed}["signups"]["data_problem"] is None
    assert {k["id"]: k for k in listed}["signups"]["verdict"] == "green"
    assert {k["id"]: k for k in listed}["fresh"]["verdict"] is None
    detail = api_client.get("/api/v1/kpis/churn").json()
    assert {k: detail[k] for k in churn} == churn
    assert [k["id"] for k in api_client.get("/api/v1/kpis?status=unknown").json()] == [
        "churn", "fresh",
    ]  # fmt: skip


def test_a_kpis_own_failing_query_says_when_its_owner_was_told(
    api_client: TestClient, api_ctx: WebContext
) -> None:
    _wh(api_ctx).set("churn", SourceError("no such table: churn", source="wh"))
    api_ctx.clock.set(NOW + timedelta(minutes=5))
    api_ctx.runner.evaluate_kpi("churn")
    churn = api_client.get("/api/v1/kpis/churn").json()
    assert (churn["status"], churn["verdict"]) == ("unknown", "red")
    assert churn["data_problem"] == {
        "since": "2026-03-02T08:05:00+00:00",
        "reason": "source 'wh': no such table: churn",
        "scope": "kpi",
        "source": "wh",
        "owner_told_at": "2026-03-02T08:05:00+00:00",
    }


def test_kpis_filter_by_team_and_status(api_client: TestClient) -> None:
    def ids(query: str) -> list[str]:
        response = api_client.get(f"/api/v1/kpis?{query}")
        assert response.status_code == 200, response.text
        return [k["id"] for k in response.json()]

    assert ids("team=growth") == ["signups", "churn", "conversion"]
    assert ids("team=platform") == ["latency"]
    assert ids("status=red") == ["churn"]
    assert ids("status=red&status=yellow") == ["churn", "latency", "conversion"]
    assert ids("team=growth&status=yellow") == ["conversion"]
    assert ids("team=platform&status=green") == []


def test_kpis_filter_refuses_unknown_team_and_status(api_client: TestClient) -> None:
    response = api_client.get("/api/v1/kpis?team=grwoth")
    assert response.status_code == 422
    assert response.json() == {"detail": "no team 'grwoth' in the rules; did you mean 'growth'?"}
    response = api_client.get("/api/v1/kpis?status=purple")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "status", 0]


def test_kpi_detail_has_history_changes_annotations_and_ack(
    api_client: TestClient, api_ctx: WebContext
) -> None:
    api_ctx.store.annotate("churn", NOW - timedelta(hours=1), "price change", "ben", NOW)
    api_ctx.store.ack("churn", NOW, "ben", "on it", NOW)
    response = api_client.get("/api/v1/kpis/churn")
    assert response.status_code == 200
    body = response.json()
    assert {k: v for k, v in body.items() if k in _status_json(api_ctx)[1]} == (
        _status_json(api_ctx)[1]
    )  # the same object as in the list ...
    assert body["history"] == [  # ... plus its history, oldest first
        {"observed_at": "2026-03-01T08:00:00+00:00", "value": 2.5},
        {"observed_at": "2026-03-02T08:00:00+00:00", "value": 6.2},
    ]
    assert [(c["from"], c["to"]) for c in body["status_changes"]] == [
        (None, "green"),
        ("green", "red"),
    ]
    assert body["status_changes"][1]["reasons"] == ["value 6.2 % > red 5 %"]
    assert body["reasons"] == ["value 6.2 % > red 5 %"]
    assert [a["text"] for a in body["annotations"]] == ["price change"]
    assert body["acknowledgement"]["author"] == "ben"
    assert body["acknowledgement"]["episode_since"] == "2026-03-02T08:00:00+00:00"


def test_kpi_detail_limit_and_since(api_client: TestClient) -> None:
    body = api_client.get("/api/v1/kpis/signups?limit=3").json()
    assert [p["value"] for p in body["history"]] == [147.0, 148.0, 149.0]  # the newest 3
    body = api_client.get("/api/v1/kpis/signups", params={"since": "2026-02-27T08:00:00Z"}).json()
    assert [p["value"] for p in body["history"]] == [147.0, 148.0, 149.0]
    body = api_client.get("/api/v1/kpis/churn?since=2026-03-02T00:00:00").json()  # no offset: UTC
    assert [c["to"] for c in body["status_changes"]] == ["red"]
    for bad in ("limit=0", "limit=5001", "since=yesterday"):
        assert api_client.get(f"/api/v1/kpis/signups?{bad}").status_code == 422, bad


def test_never_evaluated_kpi_has_empty_history(api_client: TestClient) -> None:
    body = api_client.get("/api/v1/kpis/fresh").json()
    assert body["status"] == "unknown"
    assert body["history"] == body["status_changes"] == body["annotations"] == []
    assert body["acknowledgement"] is None


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/api/v1/kpis/churm", "GET"),
        ("/api/v1/kpis/churm/observations", "POST"),
        ("/api/v1/kpis/churm/annotations", "POST"),
        ("/api/v1/kpis/churm/ack", "POST"),
        ("/api/v1/annotations?kpi=churm", "GET"),
    ],
)
def test_unknown_kpi_is_404_with_did_you_mean(
    api_client: TestClient, auth: dict[str, str], path: str, method: str
) -> None:
    body = {"/observations": {"value": 1}, "/annotations": {"text": "x"}, "/ack": {"comment": "x"}}
    payload = next((v for k, v in body.items() if path.endswith(k)), None)
    response = api_client.request(method, path, json=payload, headers=auth)
    assert response.status_code == 404
    assert response.json() == {"detail": "no KPI 'churm' in the rules; did you mean 'churn'?"}


def test_store_failure_is_503_json(
    api_ctx: WebContext, make_api_app: AppFactory, auth: dict[str, str]
) -> None:
    # nothing listens on port 1: every query fails at once
    store = Store.open("postgresql+psycopg://kp:hunter2@127.0.0.1:1/kp", migrate=False)
    try:
        client = TestClient(make_api_app(dataclasses.replace(api_ctx, store=store)))
        response = client.get("/api/v1/kpis")
        assert response.status_code == 503
        assert response.json()["detail"].startswith("the state store failed: read states")
        assert "hunter2" not in response.text
        response = client.post("/api/v1/kpis/churn/ack", json={"comment": "x"}, headers=auth)
        assert response.status_code == 503
    finally:
        store.close()


# -- pushes ---------------------------------------------------------------------------


def test_pushed_value_is_stored_and_changes_the_status(
    api_client: TestClient, api_ctx: WebContext, auth: dict[str, str]
) -> None:
    response = api_client.post(
        "/api/v1/kpis/latency/observations", json={"value": 620}, headers=auth
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["previous_status"], body["status"], body["value"]) == ("yellow", "red", 620.0)
    assert body["reasons"] == ["value 620 ms > red 500 ms"]
    assert body["findings"][0] == {
        "rule": "threshold", "status": "red", "reason": "value 620 ms > red 500 ms"
    }  # fmt: skip
    assert "status_changed" in body["events"]
    latest = api_ctx.store.latest("latency")
    assert latest is not None
    assert (latest.observed_at, latest.value) == (NOW, 620.0)
    kpi = api_client.get("/api/v1/kpis/latency").json()
    assert (kpi["status"], kpi["value"]) == ("red", 620.0)
    assert kpi["status_changes"][-1]["to"] == "red"


def test_push_at_a_given_time(
    api_client: TestClient, api_ctx: WebContext, auth: dict[str, str]
) -> None:
    at = "2026-03-02T07:30:00+01:00"
    response = api_client.post(
        "/api/v1/kpis/signups/observations", json={"value": 90.5, "at": at}, headers=auth
    )
    assert response.status_code == 201, response.text
    assert response.json()["observed_at"] == "2026-03-02T06:30:00+00:00"
    assert response.json()["status"] == "yellow"
    assert api_ctx.store.history("signups", since=NOW - timedelta(hours=2))[0].value == 90.5
    again = api_client.post(
        "/api/v1/kpis/signups/observations", json={"value": 12, "at": at}, headers=auth
    )
    assert again.status_code == 422
    assert again.json() == {
        "detail": "'signups' already has a value at 2026-03-02T06:30:00+00:00 (90.5); "
        "nothing changed"
    }
    assert api_ctx.store.history("signups", since=NOW - timedelta(hours=2))[0].value == 90.5


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('{"value": NaN}', "NaN is not a JSON number"),
        ('{"value": Infinity}', "Infinity is not a JSON number"),
        ('{"value": -Infinity}', "-Infinity is not a JSON number"),
        ('{"value": 1e400}', "number 1e400 is out of range"),
        ('{"value": 1' + "0" * 5000 + "}", "Exceeds the limit"),
        ('{"value": true}', "Input should be a valid number"),
        ('{"value": "12"}', "Input should be a valid number"),
        ('{"value": null}', "Input should be a valid number"),
        ("{}", "Field required"),
        ('{"value": 1, "unit": "ms"}', "Extra inputs are not permitted"),
        ('{"value": 1, "at": "2026-03-02T08:00:00"}', "Input should have timezone info"),
        ('{"value": 1, "at": "0001-01-01T00:00:00+01:00"}', "is out of range in UTC"),
        ('{"value": 1, "at": "2026-03-02T09:00:00Z"}', "is in the future"),
        ("[1]", "valid dictionary"),
        ('{"value": 1', "JSON decode error"),
    ],
)
def test_push_refuses_what_is_not_a_finite_value_at_a_known_time(
    api_client: TestClient, api_ctx: WebContext, auth: dict[str, str], raw: str, message: str
) -> None:
    before = api_ctx.store.history("latency")
    response = api_client.post(
        "/api/v1/kpis/latency/observations",
        content=raw,
        headers={**auth, "Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/json"
    assert message in response.text
    assert api_ctx.store.history("latency") == before  # nothing stored


def test_push_to_a_polled_kpi_is_refused(api_client: TestClient, auth: dict[str, str]) -> None:
    response = api_client.post("/api/v1/kpis/churn/observations", json={"value": 1}, headers=auth)
    assert response.status_code == 422
    assert response.json() == {
        "detail": "KPI 'churn' takes its values from source 'wh', not from pushes"
    }


@pytest.mark.parametrize(
    ("content_type", "body"),
    [("text/plain", b'{"value": 1}'), ("text/plain", b"\xff\xfe"), (None, b'{"value": 1}')],
)
def test_bodies_must_be_json(
    api_client: TestClient, auth: dict[str, str], content_type: str | None, body: bytes
) -> None:
    headers = {**auth, "Content-Type": content_type} if content_type else auth
    response = api_client.post("/api/v1/kpis/latency/observations", content=body, headers=headers)
    assert response.status_code == 415
    assert response.json() == {
        "detail": "send the body as JSON with Content-Type: application/json"
    }


def test_invalid_utf8_json_is_a_422(api_client: TestClient, auth: dict[str, str]) -> None:
    response = api_client.post(
        "/api/v1/kpis/latency/observations",
        content=b'{"value": 1, "x": "\xff"}',
        headers={**auth, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert "utf-8" in response.text


# -- silences -------------------------------------------------------------------------


def _silence(client: TestClient, auth: dict[str, str], **body: Any) -> Any:
    return client.post("/api/v1/silences", json={"comment": "deploy", **body}, headers=auth)


def test_silence_add_list_expire(
    api_client: TestClient, api_ctx: WebContext, auth: dict[str, str]
) -> None:
    response = _silence(api_client, auth, kpi="churn", duration="2h", author="ann")
    assert response.status_code == 201, response.text
    added = response.json()
    assert added | {"id": 0} == {
        "id": 0, "matcher": "kpi", "value": "churn",
        "starts_at": "2026-03-02T08:00:00+00:00", "ends_at": "2026-03-02T10:00:00+00:00",
        "author": "ann", "comment": "deploy", "created_at": "2026-03-02T08:00:00+00:00",
        "expired_at": None, "state": "active", "warnings": [],
    }  # fmt: skip
    team = _silence(api_client, auth, team="platform", duration="1h30m").json()
    assert (team["matcher"], team["value"], team["author"]) == ("team", "platform", "api")
    assert [s["id"] for s in api_client.get("/api/v1/silences").json()] == [team["id"], added["id"]]
    assert [s.id for s in api_ctx.store.silences(active_at=NOW)] == [team["id"], added["id"]]

    response = api_client.delete(f"/api/v1/silences/{added['id']}", headers=auth)
    assert response.status_code == 200
    assert (response.json()["state"], response.json()["expired_at"]) == ("expired", NOW.isoformat())
    assert [s["id"] for s in api_client.get("/api/v1/silences").json()] == [team["id"]]
    everything = api_client.get("/api/v1/silences?active=false").json()
    assert [(s["id"], s["state"]) for s in everything] == [
        (team["id"], "active"), (added["id"], "expired")
    ]  # fmt: skip


def test_expiring_an_ended_silence_keeps_its_end(
    api_client: TestClient, api_ctx: WebContext, auth: dict[str, str]
) -> None:
    added = _silence(api_client, auth, team="growth", duration="1h").json()
    assert isinstance(api_ctx.clock, FixedClock)
    api_ctx.clock.advance(timedelta(hours=2))
    response = api_client.delete(f"/api/v1/silences/{added['id']}", headers=auth)
    assert response.status_code == 200
    assert (response.json()["state"], response.json()["expired_at"]) == ("ended", None)
    assert api_client.delete("/api/v1/silences/999", headers=auth).status_code == 404
    assert api_client.delete("/api/v1/silences/999", headers=auth).json() == {
        "detail": "no silence with id 999"
    }


def test_silence_by_label_normalises_and_warns(
    api_client: TestClient, auth: dict[str, str]
) -> None:
    known = _silence(api_client, auth, label=" region = emea ", duration="1d").json()
    assert (known["value"], known["warnings"]) == ("region=emea", [])
    unknown = _silence(api_client, auth, label="region=apac", duration="1d").json()
    assert unknown["warnings"] == ["no KPI has the label region=apac now"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"duration": "2h"}, "give exactly one of kpi, team or label"),
        ({"kpi": "churn", "team": "growth", "duration": "2h"}, "give exactly one"),
        (
            {"kpi": "chrun", "duration": "2h"},
            "kpi: no KPI 'chrun' in the rules; did you mean 'churn'?",
        ),
        (
            {"team": "grwoth", "duration": "2h"},
            "no team 'grwoth' in the rules; did you mean 'growth'?",
        ),
        ({"label": "region", "duration": "2h"}, "write KEY=VALUE"),
        ({"kpi": "churn", "duration": "soon"}, "duration: invalid duration 'soon'"),
        ({"kpi": "churn", "duration": "0s"}, "must be greater than zero"),
        ({"kpi": "churn", "duration": "9999999999w"}, "is too long"),
        ({"kpi": "churn", "duration": "2h", "comment": "   "}, "must not be blank"),
        ({"kpi": "churn", "duration": "2h", "comment": "x" * 2001}, "at most 2000 characters"),
        ({"kpi": "churn", "duration": "2h", "comment": "a\x00b"}, "must not contain NUL"),
        ({"kpi": "churn", "duration": "2h", "until": "friday"}, "Extra inputs are not permitted"),
    ],
)
def test_silence_refuses_bad_requests(
    api_client: TestClient,
    api_ctx: WebContext,
    auth: dict[str, str],
    body: dict[str, Any],
    message: str,
) -> None:
    response = api_client.post("/api/v1/silences", json={"comment": "why", **body}, headers=auth)
    assert response.status_code == 422
    assert message in response.text
    assert api_ctx.store.silences() == []


# -- annotations and acks -------------------------------------------------------------


def test_annotations_come_back_verbatim_as_json(
    api_client: TestClient, api_ctx: WebContext, auth: dict[str, str]
) -> None:
    response = api_client.post(
        "/api/v1/kpis/churn/annotations",
        json={"text": XSS, "at": "2026-03-01T12:00:00Z", "author": "<b>ben</b>"},
        headers=auth,
    )
    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/json"
    assert (response.json()["text"], response.json()["author"]) == (XSS, "<b>ben</b>")
    assert api_ctx.store.annotations("churn")[0].text == XSS
    listed = api_client.get("/api/v1/annotations?kpi=churn")
    assert listed.headers["content-type"] == "application/json"
    assert [(a["text"], a["at"]) for a in listed.json()] == [(XSS, "2026-03-01T12:00:00+00:00")]
    assert api_client.get("/api/v1/kpis/churn").json()["annotations"][0]["text"] == XSS
    default = api_client.post("/api/v1/kpis/churn/annotations", json={"text": "now"}, headers=auth)
    assert (default.json()["at"], default.json()["author"]) == (NOW.isoformat(), "api")
    assert api_client.get("/api/v1/annotations?kpi=churn&limit=1").json()[0]["text"] == "now"


def test_ack_of_a_red_kpi_shows_wherever_it_does(
    api_client: TestClient, api_ctx: WebContext, auth: dict[str, str]
) -> None:
    response = api_client.post(
        "/api/v1/kpis/churn/ack", json={"comment": XSS, "author": "ben"}, headers=auth
    )
    assert response.status_code == 201, response.text
    assert response.json() | {"id": 0} == {
        "id": 0, "kpi_id": "churn", "episode_since": NOW.isoformat(), "author": "ben",
        "comment": XSS, "at": NOW.isoformat(),
    }  # fmt: skip
    assert api_ctx.store.ack_for("churn", NOW) is not None
    kpis = {k["id"]: k for k in api_client.get("/api/v1/kpis").json()}
    assert kpis["churn"]["ack"] == f"ben: {XSS}"
    assert api_client.get("/api/v1/kpis/churn").json()["acknowledgement"]["comment"] == XSS


def test_a_blind_red_episode_can_be_acknowledged(
    api_client: TestClient, api_ctx: WebContext, auth: dict[str, str]
) -> None:
    # SPEC §5a: a blind spell carries the episode on, the ack included
    _wh(api_ctx).set("churn", SourceUnavailable("connection refused", source="wh"))
    api_ctx.clock.set(NOW + timedelta(minutes=5))
    api_ctx.runner.evaluate_kpi("churn")
    response = api_client.post("/api/v1/kpis/churn/ack", json={"comment": "on it"}, headers=auth)
    assert response.status_code == 201, response.text
    assert response.json()["episode_since"] == NOW.isoformat()  # the red episode's
    assert api_ctx.store.ack_for("churn", NOW) is not None


@pytest.mark.parametrize(
    ("kpi_id", "message"),
    [
        ("signups", "KPI 'signups' is green: only red or yellow can be acknowledged"),
        ("fresh", "KPI 'fresh' has not been evaluated yet: nothing to acknowledge"),
    ],
)
def test_ack_needs_a_red_or_yellow_episode(
    api_client: TestClient, auth: dict[str, str], kpi_id: str, message: str
) -> None:
    response = api_client.post(f"/api/v1/kpis/{kpi_id}/ack", json={"comment": "x"}, headers=auth)
    assert response.status_code == 409
    assert response.json() == {"detail": message}


# -- auth -----------------------------------------------------------------------------


def _routes(app: FastAPI) -> Iterator[tuple[str, set[str]]]:
    """(path, methods) of every HTTP route the app serves, included routers flattened."""
    # FastAPI >= 0.16x keeps included routers whole in app.routes; older ones copy the routes
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    if flatten is None:
        routes = [(r.path, set(r.methods)) for r in app.routes if isinstance(r, Route)]
    else:
        routes = [(c.path, set(getattr(c, "methods", None) or ())) for c in flatten(app.routes)]
    assert routes
    yield from routes


def _write_routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every write route of the app, with made-up path parameters."""
    return [
        (method, re.sub(r"\{[^}]*id\}", "1", path))
        for path, methods in _routes(app)
        for method in sorted(methods & WRITE_METHODS)
    ]


def test_route_enumeration_sees_every_write_route(
    api_ctx: WebContext, make_api_app: AppFactory
) -> None:
    assert _write_routes(make_api_app(api_ctx)) == [
        ("POST", "/api/v1/kpis/1/observations"),
        ("POST", "/api/v1/silences"),
        ("DELETE", "/api/v1/silences/1"),
        ("POST", "/api/v1/kpis/1/annotations"),
        ("POST", "/api/v1/kpis/1/ack"),
    ]


def test_every_write_route_is_refused_without_a_configured_token(
    api_ctx: WebContext, make_api_app: AppFactory, auth: dict[str, str]
) -> None:
    app = make_api_app(api_ctx, api_token=None)
    client = TestClient(app)
    for method, path in _write_routes(app):
        for headers in ({}, auth, {"Authorization": "Bearer "}):
            response = client.request(method, path, json={}, headers=headers)
            assert response.status_code == 403, (method, path, headers)
            assert response.json() == {"detail": WRITES_DISABLED}
    # an empty token would match an empty header: it counts as unset
    empty = TestClient(make_api_app(api_ctx, api_token=SecretStr("")))
    assert (
        empty.post("/api/v1/silences", json={}, headers={"Authorization": "Bearer "}).status_code
        == 403
    )


@pytest.mark.parametrize(
    ("headers", "detail", "challenge"),
    [
        ({}, NEEDS_TOKEN, "Bearer"),
        ({"Authorization": "Basic czNjcmV0LXRva2Vu"}, NEEDS_TOKEN, "Bearer"),
        ({"Authorization": "Bearer"}, NEEDS_TOKEN, "Bearer"),
        ({"Authorization": "Bearer wrong"}, BAD_TOKEN, 'Bearer error="invalid_token"'),
        ({"Authorization": "Bearer s3cret-token2"}, BAD_TOKEN, 'Bearer error="invalid_token"'),
        ({"Authorization": "Bearer s3cret-tok\u00e9n"}, BAD_TOKEN, 'Bearer error="invalid_token"'),
    ],
)
def test_every_write_route_needs_the_right_token(
    api_ctx: WebContext,
    make_api_app: AppFactory,
    headers: dict[str, str],
    detail: str,
    challenge: str,
) -> None:
    app = make_api_app(api_ctx)
    client = TestClient(app)
    for method, path in _write_routes(app):
        sent = {k: v.encode("latin-1") for k, v in headers.items()}  # header bytes as sent
        response = client.request(method, path, json={}, headers=sent)
        assert response.status_code == 401, (method, path)
        assert response.json() == {"detail": detail}
        assert response.headers["www-authenticate"] == challenge
        assert "s3cret" not in response.text
    assert api_ctx.store.silences() == []


def test_the_right_token_writes(api_client: TestClient, auth: dict[str, str]) -> None:
    assert _silence(api_client, auth, kpi="churn", duration="1h").status_code == 201
    assert _silence(api_client, {"Authorization": "bearer s3cret-token"}, kpi="churn",
                    duration="1h").status_code == 201  # fmt: skip


def test_reads_need_no_token(api_ctx: WebContext, make_api_app: AppFactory) -> None:
    app = make_api_app(api_ctx)
    client = TestClient(app)
    reads = [p for p, methods in _routes(app) if "GET" in methods and p.startswith("/api/v1/")]
    assert len(reads) == 5  # the four reads and the OpenAPI document
    for path in reads:
        query = {"kpi": "churn"} if path.endswith("/annotations") else None
        response = client.get(path.replace("{kpi_id}", "churn"), params=query)
        assert response.status_code == 200, path
    assert client.get("/readyz").status_code == 200


def test_openapi_declares_the_bearer_scheme_on_writes_only(api_client: TestClient) -> None:
    document = api_client.get("/api/v1/openapi.json").json()
    assert document["components"]["securitySchemes"]["apiToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "The value of KPIWATCH_API_TOKEN; every write endpoint needs it.",
    }
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            secured = operation.get("security") == [{"apiToken": []}]
            assert secured == (method.upper() in WRITE_METHODS), (method, path)
            if secured:
                assert {"401", "403"} <= set(operation["responses"]), (method, path)


def test_openapi_types_are_precise(api_client: TestClient) -> None:
    schemas = api_client.get("/api/v1/openapi.json").json()["components"]["schemas"]
    summary = schemas["KpiSummary"]["properties"]
    assert summary["status"] == {"$ref": "#/components/schemas/Status"}
    assert {"verdict", "data_problem"} <= set(schemas["KpiSummary"]["required"])
    assert summary["verdict"]["anyOf"][0] == {"type": "string", "enum": ["green", "yellow", "red"]}
    assert summary["data_problem"]["anyOf"][0] == {"$ref": "#/components/schemas/DataProblemOut"}
    problem = schemas["DataProblemOut"]
    assert set(problem["required"]) == {"since", "reason", "scope", "source", "owner_told_at"}
    assert problem["properties"]["scope"]["enum"] == ["source", "kpi"]
    assert problem["properties"]["since"]["format"] == "date-time"
    assert schemas["Status"]["enum"] == [s.value for s in Status]
    assert summary["since"]["anyOf"][0] == {"type": "string", "format": "date-time"}
    assert schemas["ObservationIn"]["additionalProperties"] is False
    assert schemas["AckIn"]["properties"]["comment"]["maxLength"] == 2000
