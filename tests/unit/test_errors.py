"""Secrets never reach an error or a log line."""

from collections.abc import Iterator

import pytest

from kpiwatch import known_secrets
from kpiwatch.config.durations import format_duration, parse_duration
from kpiwatch.errors import SourceError, is_sensitive_name, redact


@pytest.fixture
def registry() -> Iterator[None]:
    known_secrets.forget_all()
    yield
    known_secrets.forget_all()


def test_redact_hides_url_passwords_and_tokens() -> None:
    text = "postgresql+psycopg://kpi:s3cr3t@db:5432/x failed; Bearer abc.def; xoxb-123-456"
    cleaned = redact(text)
    assert "s3cr3t" not in cleaned
    assert "abc.def" not in cleaned
    assert "123-456" not in cleaned
    assert "postgresql+psycopg://kpi:***@db:5432/x" in cleaned


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # only the secret goes: the parameters after it stay
        ("GET /v1/m?token=abc123&page=2 500", "GET /v1/m?token=***&page=2 500"),
        (
            "https://api.example.com/m?page=1&api_key=K9x&limit=5",
            "https://api.example.com/m?page=1&api_key=***&limit=5",
        ),
        # what follows a secret behind \x00, ";", ",", ")", "#", a quote survives
        ("token=abc\x00PATH=/usr/bin", "token=***\x00PATH=/usr/bin"),
        ("password=hunter22;user=bob", "password=***;user=bob"),
        ("secret=abc,next=1", "secret=***,next=1"),
        ("Retry(url='/m?sig=abc%2F')", "Retry(url='/m?sig=***')"),
        ("(see /m?key=v4lue) then", "(see /m?key=***) then"),
        ("/m?signature=zz#frag", "/m?signature=***#frag"),
        # the names, any case, and their prefixed forms
        (
            "?Token=a&ACCESS_TOKEN=b&apikey=c&x-api-key=d",
            "?Token=***&ACCESS_TOKEN=***&apikey=***&x-api-key=***",
        ),
        (
            "auth_token=a client_secret=b private_key=c",
            "auth_token=*** client_secret=*** private_key=***",
        ),
        (
            "sslpassword=a&authtoken=b&sslmode=require",
            "sslpassword=***&authtoken=***&sslmode=require",
        ),
        # not secrets: a name merely ending in one
        ("monkey=banana design=flat sortkey=1", "monkey=banana design=flat sortkey=1"),
        # user:password in a URL, Bearer, Slack
        (
            "postgresql+psycopg://kpi:p%40ss@db:5432/x failed",
            "postgresql+psycopg://kpi:***@db:5432/x failed",
        ),
        ("Authorization: Bearer abc.def-1~2+3/4=)rest", "Authorization: Bearer ***)rest"),
        ("token xoxb-123-456-abc, again", "token xoxb-***, again"),
        (
            "https://hooks.slack.com/services/T0/B0/XYZ said no",
            "https://hooks.slack.com/services/*** said no",
        ),
    ],
)
def test_redact_replaces_only_the_secret(text: str, expected: str, registry: None) -> None:
    assert redact(text) == expected


def test_sensitive_names() -> None:
    sensitive = ("token", "KEY", "secret", "password", "sig", "signature", "access_token",
                 "api_key", "apikey", "auth_token", "client_secret", "X-Api-Key",
                 "sslpassword")  # fmt: skip
    for name in sensitive:
        assert is_sensitive_name(name), name
    for name in ("page", "monkey", "keys", "signal", "tokens_used", "passwordless", "sslmode"):
        assert not is_sensitive_name(name), name


def test_known_secrets_are_hidden_whatever_their_shape(registry: None) -> None:
    known_secrets.register(["hdr-v4lue-99", "p@ss w/rd", "short", None])
    text = "header X-Custom: hdr-v4lue-99; url http://h/?q=p%40ss%20w%2Frd&n=1; word short"
    assert redact(text) == "header X-Custom: ***; url http://h/?q=***&n=1; word short"


def test_source_error_names_the_source_and_is_redacted() -> None:
    error = SourceError("cannot reach mysql://root:pw@host/db", source="warehouse", kpi="churn")
    assert str(error) == "source 'warehouse': cannot reach mysql://root:***@host/db"
    assert error.kpi == "churn"


def test_durations_round_trip() -> None:
    for text, seconds in (
        ("30s", 30),
        ("5m", 300),
        ("1h", 3600),
        ("7d", 604800),
        ("2w", 1209600),
        ("1h30m", 5400),
    ):
        assert parse_duration(text).total_seconds() == seconds
        assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)
