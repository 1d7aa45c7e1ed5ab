"""KPIWATCH_READ_TOKEN (the board, the pages, the read API) with its login form, and
KPIWATCH_METRICS_TOKEN (/metrics, /healthz, /readyz), through the daemon's whole app."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from kpiwatch.web.app import create_app
from kpiwatch.web.context import WebContext

API_TOKEN = "s3cret-token"  # conftest's api_ctx
READ = "read-only-token"
METRICS = "scrape-token"
COOKIE = "kpiwatch_session"
Client = Callable[..., TestClient]


@pytest.fixture
def client(api_ctx: WebContext) -> Client:
    def make(base_url: str = "http://testserver", **settings: Any) -> TestClient:
        settings.setdefault("read_token", READ)
        # model_copy does not validate: secrets go in as SecretStr, as the settings make them
        settings = {k: SecretStr(v) if k.endswith("_token") and isinstance(v, str) else v
                    for k, v in settings.items()}  # fmt: skip
        ctx = dataclasses.replace(api_ctx, settings=api_ctx.settings.model_copy(update=settings))
        return TestClient(create_app(ctx), base_url=base_url, follow_redirects=False)

    return make


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _login(http: TestClient, token: str = READ, next_path: str = "/kpis/churn") -> Any:
    return http.post("/login", data={"token": token, "next": next_path})


# -- the read API --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/api/v1/kpis", "/api/v1/kpis/churn", "/api/v1/silences", "/api/v1/openapi.json"]
)
def test_the_read_api_needs_a_token_that_grants_reads(client: Client, path: str) -> None:
    http = client()
    refused = http.get(path)
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/json"
    assert refused.headers["www-authenticate"] == "Bearer"
    assert "KPIWATCH_READ_TOKEN" in refused.json()["detail"]
    assert http.get(path, headers=_bearer("wrong")).status_code == 401
    assert http.get(path, headers=_bearer(READ)).status_code == 200
    assert http.get(path, headers=_bearer(API_TOKEN)).status_code == 200  # it grants reads


def test_without_a_read_token_reads_are_open(client: Client) -> None:
    http = client(read_token=None)
    assert http.get("/api/v1/kpis").status_code == 200
    assert http.get("/").status_code == 200
    assert http.get("/login?next=/kpis/churn").headers["location"] == "/kpis/churn"


def test_writes_keep_the_api_token_rule(client: Client) -> None:
    http = client()
    note = {"text": "price change"}
    url = "/api/v1/kpis/churn/annotations"
    assert http.post(url, json=note, headers=_bearer(READ)).status_code == 401
    assert http.post(url, json=note, headers=_bearer(API_TOKEN)).status_code == 201
    assert client(api_token=None).post(url, json=note, headers=_bearer(READ)).status_code == 403


# -- the pages and the login form ----------------------------------------------------------


def test_a_page_without_a_login_redirects_to_the_form(client: Client) -> None:
    http = client()
    for path, target in (("/", "/login?next=%2F"),
                         ("/kpis/churn?x=1", "/login?next=%2Fkpis%2Fchurn%3Fx%3D1")):  # fmt: skip
        response = http.get(path)
        assert response.status_code == 303
        assert response.headers["location"] == target
    form = http.get("/login?next=%2Fkpis%2Fchurn")
    assert form.status_code == 200
    assert '<input type="hidden" name="next" value="/kpis/churn">' in form.text
    assert 'name="token" type="password"' in form.text
    assert "<script" not in form.text
    assert "default-src 'none'" in form.headers["content-security-policy"]
    assert http.get("/", headers=_bearer(READ)).status_code == 200  # a bearer works on pages


def test_the_login_sets_a_strict_httponly_cookie_without_the_token(client: Client) -> None:
    http = client()
    response = _login(http)
    assert response.status_code == 303
    assert response.headers["location"] == "/kpis/churn"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Secure" not in cookie  # plain http, no https public_url
    assert READ not in cookie
    assert re.fullmatch(r"\d+\.[0-9a-f]{64}", http.cookies[COOKIE])
    page = http.get("/kpis/churn")
    assert page.status_code == 200
    assert "Churn rate" in page.text
    assert '<form class="logout" method="post" action="/logout">' in page.text
    assert http.get("/api/v1/kpis").status_code == 200  # the cookie grants API reads too


@pytest.mark.parametrize(
    ("base_url", "settings"),
    [("https://testserver", {}), ("http://testserver", {"public_url": "https://kpi.example"})],
)
def test_the_cookie_is_secure_over_https(
    client: Client, base_url: str, settings: dict[str, Any]
) -> None:
    response = _login(client(base_url=base_url, **settings))
    assert "Secure" in response.headers["set-cookie"]


def test_the_api_token_logs_in_too(client: Client) -> None:
    assert _login(client(), API_TOKEN).status_code == 303


def test_a_wrong_token_shows_the_form_again(client: Client) -> None:
    http = client()
    response = _login(http, "wrong")
    assert response.status_code == 403
    assert "set-cookie" not in response.headers
    assert "That token is not valid." in response.text
    assert '<input type="hidden" name="next" value="/kpis/churn">' in response.text
    assert http.get("/").status_code == 303


def test_a_forged_or_stale_cookie_is_refused(client: Client) -> None:
    http = client()
    _login(http)
    issued, mac = http.cookies[COOKIE].split(".")
    http.cookies.set(COOKIE, f"{int(issued) + 1}.{mac}")
    assert http.get("/").status_code == 303
    http.cookies.set(COOKIE, READ)
    assert http.get("/").status_code == 303
    http.cookies.set(COOKIE, f"{issued}.{mac}")
    assert http.get("/").status_code == 200
    rotated = client(read_token="a-new-read-token")  # same cookie, new token: logged out
    rotated.cookies.set(COOKIE, f"{issued}.{mac}")
    assert rotated.get("/").status_code == 303


@pytest.mark.parametrize(
    "target",
    ["//evil.example", "https://evil.example/", "/\\evil.example", "evil.example",
     "/%0d%0aSet-Cookie:x=1", "\t//evil.example", ""],
)  # fmt: skip
def test_the_login_redirects_only_to_a_local_path(client: Client, target: str) -> None:
    response = _login(client(), next_path=target)
    assert response.status_code == 303
    location = response.headers["location"]
    assert location == "/" or location == target == "/%0d%0aSet-Cookie:x=1"
    assert "set-cookie:x" not in {k.lower() for k in response.headers}


def test_logout_clears_the_cookie(client: Client) -> None:
    http = client()
    _login(http)
    response = http.post("/logout")
    assert response.status_code == 303
    assert response.headers["location"] == "/login"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f'{COOKIE}=""') or cookie.startswith(f"{COOKIE}=;")
    assert "Max-Age=0" in cookie
    assert COOKIE not in http.cookies
    assert http.get("/").status_code == 303


def test_the_login_form_has_the_body_limit(client: Client) -> None:
    http = client(max_body_bytes=1024)
    response = http.post("/login", content=b"token=" + b"x" * 2000,
                         headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert response.status_code == 413


# -- the probes ----------------------------------------------------------------------------


# the fixture's scheduler never ticked: /healthz answers 503, which is not a refusal
@pytest.mark.parametrize(
    ("path", "status"), [("/metrics", 200), ("/healthz", 503), ("/readyz", 200)]
)
def test_the_probes_need_the_metrics_token_when_one_is_set(
    client: Client, path: str, status: int
) -> None:
    open_ = client()  # a read token alone leaves the probes open
    assert open_.get(path).status_code == status
    http = client(metrics_token=METRICS)
    refused = http.get(path)
    assert refused.status_code == 401
    assert "KPIWATCH_METRICS_TOKEN" in refused.json()["detail"]
    assert http.get(path, headers=_bearer(READ)).status_code == 401
    assert http.get(path, headers=_bearer(API_TOKEN)).status_code == 401
    assert http.get(path, headers=_bearer(METRICS)).status_code == status
