"""The secret values of the settings and the rules, as redaction is told them."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from kpiwatch import known_secrets
from kpiwatch.config import secrets
from kpiwatch.config.loader import load_rule_text
from kpiwatch.config.settings import Settings
from kpiwatch.errors import redact

RULES = """
sources:
  pg: {type: sql, url: "postgresql+psycopg://kpi:db-pw-9Xq@db:5432/wh?sslmode=require"}
  api:
    type: http
    url: "https://api.example.com/v1/m?access_token=url-tok-7Ls&page=2"
    headers: {X-Api-Key: hdr-key-5Wd, Accept: application/json}
    params: {client_secret: param-sec-3Rt, region: eu-west-1}
    auth: {username: kpi, password: basic-pw-1Zm}
  api2: {type: http, url: "https://api.example.com/v2", auth: {bearer: bearer-tok-8Yn}}
  prom: {type: prometheus, url: "http://prom:9090", headers: {X-Scope-OrgID: prom-hdr-6Kp}}
  sheet: {type: csv, url: "https://files.example.com/k.csv?sig=csv-sig-4Hj"}
teams:
  growth: {webhook: "https://hooks.example.com/in?token=hook-tok-2Gc"}
kpis:
  - {id: mrr, name: MRR, owner: a@example.com, direction: higher_is_better, source: api,
     query: n, thresholds: {red: 1}, team: growth,
     notify: {webhook: "https://u:kpi-hook-pw-0Fb@hooks.example.com/k"}}
"""


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)
    for name in list(__import__("os").environ):
        if name.startswith("KPIWATCH_"):
            monkeypatch.delenv(name)
    known_secrets.forget_all()
    yield
    known_secrets.forget_all()


def _settings() -> Settings:
    return Settings(
        database_url="postgresql+psycopg://kw:state-pw-5Ab@db/kpiwatch",
        slack_token="xoxb-slack-tok-4Cd",
        slack_webhook_url="https://hooks.slack.com/services/T1/B2/webhook-path-3Ef",
        smtp_password="smtp-pw-2Gh",
        api_token="api-tok-1Ij",
        webhook_secret="wh-secret-0Kl",
        read_token="read-tok-9Mn",
        metrics_token="metrics-tok-8Op",
        pushgateway_url="http://pg:push-pw-7Qr@push:9091",
        alertmanager_url="http://am:am-pw-6Rs@alertmanager:9093",
    )


def test_every_secret_of_the_settings_and_nothing_else() -> None:
    found = set(secrets.settings_secrets(_settings()))
    assert {"state-pw-5Ab", "xoxb-slack-tok-4Cd", "smtp-pw-2Gh", "api-tok-1Ij",
            "wh-secret-0Kl", "read-tok-9Mn", "metrics-tok-8Op", "push-pw-7Qr", "am-pw-6Rs",
            "https://hooks.slack.com/services/T1/B2/webhook-path-3Ef",
            "/services/T1/B2/webhook-path-3Ef"} <= found  # fmt: skip
    # the database URL is shown in logs (password masked): the URL itself is no secret
    assert not any("db/kpiwatch" in value for value in found)


def test_every_secret_of_the_rules_and_nothing_else() -> None:
    rules = load_rule_text(RULES).rules
    found = set(secrets.rules_secrets(rules))
    basic = base64.b64encode(b"kpi:basic-pw-1Zm").decode()
    expected = {"db-pw-9Xq", "url-tok-7Ls", "hdr-key-5Wd", "param-sec-3Rt", "basic-pw-1Zm",
                basic, "bearer-tok-8Yn", "prom-hdr-6Kp", "csv-sig-4Hj", "hook-tok-2Gc",
                "kpi-hook-pw-0Fb"}  # fmt: skip
    assert found == expected


def test_registered_secrets_are_hidden_in_any_text() -> None:
    secrets.register(_settings(), load_rule_text(RULES).rules)
    text = (
        "sent X-Api-Key: hdr-key-5Wd and X-Scope-OrgID=prom-hdr-6Kp (region eu-west-1); "
        "Authorization: Basic " + base64.b64encode(b"kpi:basic-pw-1Zm").decode() + "\n"
        "smtp login kw/smtp-pw-2Gh refused; token api-tok-1Ij"
    )
    assert redact(text) == (
        "sent X-Api-Key: *** and X-Scope-OrgID=*** (region eu-west-1); "
        "Authorization: Basic ***\nsmtp login kw/*** refused; token ***"
    )
