"""Secrets never reach an error or a log line."""

from kpiwatch.config.durations import format_duration, parse_duration
from kpiwatch.errors import SourceError, redact


def test_redact_hides_url_passwords_and_tokens() -> None:
    text = "postgresql+psycopg://kpi:s3cr3t@db:5432/x failed; Bearer abc.def; xoxb-123-456"
    cleaned = redact(text)
    assert "s3cr3t" not in cleaned
    assert "abc.def" not in cleaned
    assert "123-456" not in cleaned
    assert "postgresql+psycopg://kpi:***@db:5432/x" in cleaned


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
