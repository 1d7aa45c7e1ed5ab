"""Settings from defaults, the environment, a TOML file and .env, with secrets kept secret."""

from __future__ import annotations

from datetime import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from kpiwatch.config.settings import Settings


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in list(__import__("os").environ):
        if name.startswith("KPIWATCH_"):
            monkeypatch.delenv(name)


def test_defaults_match_the_contract() -> None:
    s = Settings()
    assert s.database_url.get_secret_value() == "sqlite:///kpiwatch.db"
    assert str(s.rules_dir) == "rules"
    assert s.timezone == "UTC"
    assert s.review_time == time(9, 0)
    assert (s.http_host, s.http_port) == ("127.0.0.1", 10470)
    assert s.slack_api_url == "https://slack.com/api/"
    assert s.smtp_port == 587
    assert s.email_from == "kpiwatch@localhost"
    assert s.oncall_emails == []
    assert s.oncall_cron == "0 8 * * *"
    assert s.api_token is None


def test_environment_beats_toml_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "k.toml"
    config.write_text('timezone = "Europe/Berlin"\nhttp_port = 9000\nreview_time = "08:30"\n')
    monkeypatch.setenv("KPIWATCH_CONFIG", str(config))
    monkeypatch.setenv("KPIWATCH_HTTP_PORT", "9100")
    s = Settings()
    assert s.timezone == "Europe/Berlin"
    assert s.review_time == time(8, 30)
    assert s.http_port == 9100


def test_default_toml_file_and_dotenv_are_read(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "kpiwatch.toml").write_text('rules_dir = "from-toml"\n')
    (tmp_path / ".env").write_text("KPIWATCH_ONCALL_EMAILS=a@example.com, b@example.com\n")
    s = Settings()
    assert str(s.rules_dir) == "from-toml"
    assert s.oncall_emails == ["a@example.com", "b@example.com"]


def test_secrets_never_show_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KPIWATCH_SLACK_TOKEN", "xoxb-very-secret")
    monkeypatch.setenv("KPIWATCH_DATABASE_URL", "postgresql://u:hunter2@db/k")
    s = Settings()
    assert s.slack_token is not None
    assert s.slack_token.get_secret_value() == "xoxb-very-secret"
    assert "very-secret" not in repr(s)
    assert "hunter2" not in repr(s)


def test_bad_values_are_rejected_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KPIWATCH_TIMEZONE", "Mars/Olympus")
    with pytest.raises(ValidationError, match="unknown timezone 'Mars/Olympus'"):
        Settings()


def test_unknown_keys_in_the_toml_file_are_rejected(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "k.toml"
    config.write_text('timezon = "UTC"\n')
    monkeypatch.setenv("KPIWATCH_CONFIG", str(config))
    with pytest.raises(ValidationError, match="timezon"):
        Settings()


def test_the_alertmanager_is_an_http_url_refreshed_every_minute_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().alertmanager_url is None
    assert Settings().alertmanager_refresh == 60.0
    monkeypatch.setenv("KPIWATCH_ALERTMANAGER_URL", "http://am.internal:9093")
    assert Settings().alertmanager_url == "http://am.internal:9093"
    monkeypatch.setenv("KPIWATCH_ALERTMANAGER_URL", "am.internal:9093")
    with pytest.raises(ValidationError, match=r"alertmanager_url\n.*must be an http:// or https://"):
        Settings()


def test_reminder_settings_read_durations_as_the_rules_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from datetime import timedelta

    defaults = Settings()
    assert (defaults.reminder_first, defaults.reminder_factor, defaults.reminder_max) == (
        timedelta(days=1), 2.0, timedelta(days=7),
    )  # fmt: skip
    monkeypatch.setenv("KPIWATCH_REMINDER_FIRST", "12h")
    monkeypatch.setenv("KPIWATCH_REMINDER_FACTOR", "1.5")
    monkeypatch.setenv("KPIWATCH_REMINDER_MAX", "P3D")
    s = Settings()
    assert (s.reminder_first, s.reminder_factor, s.reminder_max) == (
        timedelta(hours=12), 1.5, timedelta(days=3),
    )  # fmt: skip
    monkeypatch.setenv("KPIWATCH_REMINDER_MAX", "30s")
    with pytest.raises(ValidationError, match="at least 1m"):
        Settings()


def test_blind_notice_after_is_a_duration_of_a_minute_or_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from datetime import timedelta

    assert Settings().blind_notice_after == timedelta(days=1)
    monkeypatch.setenv("KPIWATCH_BLIND_NOTICE_AFTER", "6h")
    assert Settings().blind_notice_after == timedelta(hours=6)
    monkeypatch.setenv("KPIWATCH_BLIND_NOTICE_AFTER", "10s")
    with pytest.raises(ValidationError, match="at least 1m"):
        Settings()
