"""Which values of the settings and the rules are secrets, for :mod:`kpiwatch.known_secrets`.

Settings: every ``SecretStr`` field; of a URL-valued one (the database URL) only the
password and the sensitive query values, since the rest (host, database name) is
what people need to see in logs. Rules: the header values of HTTP and Prometheus
sources, HTTP auth passwords and bearers (and the Basic header they become),
sensitive ``params``, and passwords and sensitive query values in source and webhook URLs.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import SecretStr

from kpiwatch import known_secrets
from kpiwatch.config.rules import CsvSource, HttpSource, PrometheusSource, RuleSet, SqlSource
from kpiwatch.config.settings import Settings
from kpiwatch.errors import is_sensitive_name

# fields whose value is a URL that is shown (redacted) in logs: only its secret parts count
_URL_SETTINGS = frozenset({"database_url"})
# header values that are protocol vocabulary, not credentials: masking "application/json"
# everywhere would only garble logs
_PLAIN_HEADERS = frozenset(
    {"accept", "accept-encoding", "accept-language", "content-type", "user-agent"}
)


def settings_secrets(settings: Settings) -> Iterator[str]:
    """The secret values among the settings."""
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if not isinstance(value, SecretStr):
            continue
        text = value.get_secret_value()
        if name in _URL_SETTINGS:
            yield from url_secrets(text)
        else:
            yield text
            if "://" in text:  # a webhook URL: its path is the credential, also on its own
                path = urlsplit(text).path
                if path.count("/") > 1:
                    yield path
    for url in (settings.pushgateway_url, settings.alertmanager_url):
        if url:  # may carry basic-auth credentials
            yield from url_secrets(url)


def rules_secrets(rules: RuleSet) -> Iterator[str]:
    """The secret values in the sources of the rules."""
    for source in rules.sources.values():
        if isinstance(source, SqlSource | PrometheusSource | CsvSource) and source.url:
            yield from url_secrets(source.url)
        if isinstance(source, HttpSource | PrometheusSource):
            yield from (v for k, v in source.headers.items() if k.lower() not in _PLAIN_HEADERS)
        if isinstance(source, HttpSource):
            yield from url_secrets(source.url)
            yield from (v for k, v in source.params.items() if is_sensitive_name(k))
            auth = source.auth
            if auth is not None and auth.bearer is not None:
                yield auth.bearer.get_secret_value()
            if auth is not None and auth.password is not None:
                password = auth.password.get_secret_value()
                yield password
                pair = f"{auth.username or ''}:{password}".encode()
                yield base64.b64encode(pair).decode()  # the Authorization: Basic value
    for team in rules.teams.values():
        if team.webhook:
            yield from url_secrets(team.webhook)
    for kpi in rules.kpis:
        if kpi.notify is not None and kpi.notify.webhook:
            yield from url_secrets(kpi.notify.webhook)


def url_secrets(url: str) -> Iterator[str]:
    """The password and the values of sensitive query names of a URL."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not a URL after all (a bad port): nothing to take apart
        return
    if password:
        yield password
        yield unquote(password)
    for name, value in parse_qsl(parts.query, keep_blank_values=False):
        if is_sensitive_name(name):
            yield value


def register(settings: Settings, rules: RuleSet | None = None) -> None:
    """Tell redaction the secrets of these settings and rules (the composition root calls
    this after loading them, and again after a reload)."""
    known_secrets.register(settings_secrets(settings))
    if rules is not None:
        known_secrets.register(rules_secrets(rules))
