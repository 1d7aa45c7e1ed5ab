"""Process settings: ``KPIWATCH_*`` environment variables, a TOML file, ``.env``.

Precedence, highest first: constructor arguments, environment, ``.env``, the
TOML file named by ``KPIWATCH_CONFIG`` (default ``config/kpiwatch.toml``), defaults.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from kpiwatch.config.durations import parse_duration

DEFAULT_CONFIG_FILE = "config/kpiwatch.toml"


def _span(value: Any) -> Any:
    """``1d``, ``12h`` as in the rules (and what pydantic reads: seconds, ISO 8601)."""
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError:
            return value  # pydantic's own parsing gives the error, or reads P1D
    return value


def _minute_or_more(value: timedelta) -> timedelta:
    if value < timedelta(minutes=1):  # the reminder tick runs once a minute
        raise ValueError("must be at least 1m")
    return value


ReminderSpan = Annotated[timedelta, BeforeValidator(_span), AfterValidator(_minute_or_more)]


def _off_or_span(value: Any) -> Any:
    """``off`` (or empty) keeps every observation; else a span as ``_span`` reads it."""
    if isinstance(value, str) and value.strip().lower() in ("", "off", "none"):
        return None
    return _span(value)


def _hour_or_more(value: timedelta | None) -> timedelta | None:
    if value is not None and value < timedelta(hours=1):  # the prune runs once an hour
        raise ValueError("must be at least 1h, or off")
    return value


RetentionSpan = Annotated[
    timedelta | None, BeforeValidator(_off_or_span), AfterValidator(_hour_or_more)
]


def default_cache_dir() -> Path | None:
    """``$XDG_CACHE_HOME/kpiwatch``, else ``~/.cache/kpiwatch``; None with no home."""
    if base := os.environ.get("XDG_CACHE_HOME"):
        return Path(base) / "kpiwatch"
    home = os.path.expanduser("~")
    return None if home.startswith("~") else Path(home) / ".cache" / "kpiwatch"


def _no_path_if_empty(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


def config_file() -> Path:
    return Path(os.environ.get("KPIWATCH_CONFIG", DEFAULT_CONFIG_FILE))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="KPIWATCH_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="forbid",
        validate_default=True,
    )

    database_url: SecretStr = SecretStr("sqlite:///kpiwatch.db")
    rules_dir: Path = Path("rules")
    timezone: str = "UTC"
    review_time: time = time(9, 0)
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=10470, ge=0, le=65535)
    public_url: str | None = None  # base of links in notifications; default http://host:port
    slack_token: SecretStr | None = None
    slack_webhook_url: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = True
    smtp_ssl: bool = False
    email_from: str = "kpiwatch@localhost"
    oncall_emails: Annotated[list[str], NoDecode] = Field(default_factory=list)
    oncall_cron: str = "0 8 * * *"
    webhook_secret: SecretStr | None = None  # signs webhook payloads (HMAC-SHA256)
    pushgateway_url: str | None = None
    # Alertmanager base URL (http://host:9093): rules' `alertmanager: default` posts there
    alertmanager_url: str | None = None
    # seconds between re-posts of firing alerts; their endsAt is 4x this ahead. With
    # `run --once` from cron, set it to the cron interval so alerts last until the next run
    alertmanager_refresh: float = Field(default=60.0, ge=5, le=86_400)
    # the Pushgateway group is {job="kpiwatch", instance=this}: stable across runs and
    # hosts (a cron pod's hostname changes), so each run replaces the last one's series
    pushgateway_instance: str = Field(default="default", min_length=1)
    api_token: SecretStr | None = None
    # optional: protects the board, the pages and the read API (bearer header or login cookie)
    read_token: SecretStr | None = None
    # optional: protects /metrics, /healthz and /readyz (a scraper's bearer_token)
    metrics_token: SecretStr | None = None
    # request bodies above this are refused with 413 before a byte of them is read
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=64 * 1024 * 1024)
    # directories besides the rules directory that CSV sources may read files from
    file_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    # where a clean load of the rules keeps what it parsed and checked, so that the next
    # start with unchanged files is fast (config/rules_cache.py); empty: keep nothing
    cache_dir: Annotated[Path | None, BeforeValidator(_no_path_if_empty)] = Field(
        default_factory=lambda: default_cache_dir()
    )
    log_format: Literal["console", "json"] | None = None  # None: console on a TTY, else json
    log_level: str = "info"
    max_workers: int = Field(default=8, ge=1, le=256)  # concurrent source fetches
    misfire_grace: int = Field(default=300, ge=1)  # seconds a late poll may still run
    delivery_timeout: float = Field(default=30.0, gt=0)  # run --once: time to deliver
    # replicas: how long a claim on a piece of work lasts before others may take it over
    lease_seconds: float = Field(default=60.0, ge=1, le=86_400)
    # reminders of unacknowledged red episodes, unless a KPI or its team says otherwise:
    # the first this long after the episode started, each gap `factor` times the last
    reminder_first: ReminderSpan = timedelta(days=1)
    reminder_factor: float = Field(default=2.0, ge=1, le=100)
    reminder_max: ReminderSpan = timedelta(days=7)
    # a KPI blind because its source fails is told to its owner after this (once);
    # the source's owner hears at once (SPEC §5a). A KPI's blind_notice_after wins.
    blind_notice_after: ReminderSpan = timedelta(days=1)
    # how long observations are kept; a KPI keeps at least what its rules read (its newest
    # points, or the whole 400-day window of a rule that looks back), so no verdict
    # changes. off: keep everything (evaluation/retention.py)
    retention: RetentionSpan = timedelta(days=400)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown timezone {value!r}: use an IANA name such as Europe/Berlin"
            ) from None
        return value

    @field_validator("alertmanager_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        # refused at start, not retried for a day in the outbox and then dead-lettered
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL, such as http://localhost:9093")
        return value

    @field_validator("oncall_emails", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        # KPIWATCH_ONCALL_EMAILS=a@x,b@y as well as a JSON list
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("file_roots", mode="before")
    @classmethod
    def _path_list(cls, value: Any) -> Any:
        # KPIWATCH_FILE_ROOTS=/srv/a:/srv/b (as PATH), a comma list, or a JSON list
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            parts = value.replace(",", os.pathsep).split(os.pathsep)
            return [p.strip() for p in parts if p.strip()]
        return value

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def effective_log_format(self) -> Literal["console", "json"]:
        if self.log_format is not None:
            return self.log_format
        return "console" if sys.stderr.isatty() else "json"

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.http_host}:{self.http_port}").rstrip("/")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=config_file()),
        )
