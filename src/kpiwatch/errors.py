"""The kpiwatch error tree.

    KpiwatchError
    ├── ConfigError              settings or rules cannot be used
    │   └── RuleLoadError        one or more rule-file problems, each with file:line:col
    ├── SourceError              a source could not give a usable value (knows source and KPI)
    │   ├── SourceUnavailable    the source as a whole failed: connect, auth, server error
    │   │   └── SourceTimeout
    │   └── BadValueError        the source answered, but not with a finite number
    ├── StoreError               the state store
    │   ├── InstanceLockedError  another instance holds the embedded database
    │   └── EvaluationSuperseded the KPI was evaluated again meanwhile; this result is dropped
    └── DeliveryError            a channel could not deliver (knows channel, retryable or not)

Messages name the bad value with ``!r`` and never contain a secret: URLs pass
through :func:`redact` before they reach an error or a log line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from kpiwatch import known_secrets

# scheme://user:password@ : the password ends at the "@" (a "/" or space means no userinfo)
_URL_PASSWORD = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]*)@"
)
# Names whose values are credentials: the exact names and their prefixed forms
# (auth_token, client_secret, x-api-key, sslpassword, db_pwd). The short "key", "sig"
# and "pwd" need a "_"/"-" before them: "monkey=" and "design=" are not secrets.
_SENSITIVE_NAME = (
    r"(?:[a-z0-9]+[_-])*"
    r"(?:[a-z0-9]*(?:token|secret|password|passwd|signature|apikey|credentials?)|key|sig|pwd)"
)
_SENSITIVE_NAME_RE = re.compile(rf"(?i){_SENSITIVE_NAME}")
# A value ends at the first character that cannot be part of it in a URL or a log line:
# whitespace, a control character (\x00 ...), the next parameter ("&", ";"), a fragment,
# a quote, a bracket, a comma, a backslash (an escaped repr). Only the value is replaced.
_VALUE = r"[^\s\x00-\x1f\x7f&;#,()\[\]{}<>\"'\\]+"
_NAMED_VALUE = re.compile(rf"(?i)(?<![a-z0-9_-])({_SENSITIVE_NAME}=){_VALUE}")
# RFC 6750's b64token characters: a bearer token ends at anything else
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+")
_SLACK_TOKEN = re.compile(r"\b(xox[abeoprs]-|xapp-)[A-Za-z0-9-]+")
_SLACK_WEBHOOK = re.compile(r"(?i)(hooks\.slack\.com/(?:services|workflows|triggers)/)[\w/-]+")


def is_sensitive_name(name: str) -> bool:
    """Whether a query parameter or field of this name holds a credential."""
    return _SENSITIVE_NAME_RE.fullmatch(name) is not None


def redact(text: str) -> str:
    """``text`` with every secret in it replaced by ``***``, and only the secret.

    The secret values this process knows (:mod:`kpiwatch.known_secrets`) go first,
    whatever their shape; then the patterns: the password of ``scheme://user:pw@``,
    values of sensitive names (``?token=``, ``&api_key=``, ``client_secret=`` ...),
    ``Bearer`` tokens, Slack tokens and webhook paths. What follows a secret
    (``&page=2``, ``\x00PATH=...``, ``; next``) is kept.
    """
    text = known_secrets.hide(text)
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    text = _NAMED_VALUE.sub(r"\1***", text)
    text = _BEARER.sub(r"\1***", text)
    text = _SLACK_TOKEN.sub(r"\1***", text)
    return _SLACK_WEBHOOK.sub(r"\1***", text)


class KpiwatchError(Exception):
    """Base class of every error kpiwatch raises on purpose."""


class ConfigError(KpiwatchError):
    """Settings or rules cannot be used; the CLI exits 2 on it."""


@dataclass(frozen=True, slots=True)
class RuleProblem:
    """One problem in a rule file, located for a person to fix."""

    file: str
    line: int
    column: int
    path: str  # inside the document, e.g. "kpis[2].thresholds.red"
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.file}:{self.line}:{self.column}: {where}{self.message}"


class RuleLoadError(ConfigError):
    """Rules that did not load; ``problems`` lists every one found, not only the first."""

    def __init__(self, problems: Sequence[RuleProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class SourceError(KpiwatchError):
    """A source could not give a usable value for a KPI."""

    def __init__(self, message: str, *, source: str | None = None, kpi: str | None = None) -> None:
        self.source = source
        self.kpi = kpi
        self.reason = redact(message)
        prefix = f"source {source!r}: " if source else ""
        super().__init__(prefix + self.reason)


class SourceUnavailable(SourceError):
    """The source itself failed, not this KPI's query: it cannot be reached, refused the
    credentials, or answered with a server error. Every KPI it feeds is blind, and the
    source's owner hears about it (SPEC §5a, scope ``source``)."""


class SourceTimeout(SourceUnavailable):
    """The source did not answer within its timeout."""


class BadValueError(SourceError):
    """The source answered, but with NULL, NaN, ±inf, text or no rows."""


class StoreError(KpiwatchError):
    """The state store failed."""


class InstanceLockedError(StoreError):
    """Another kpiwatch instance already uses this embedded database."""


class EvaluationSuperseded(StoreError):
    """A KPI was evaluated again (another replica, a push, a second ``run --once``)
    between reading its state and saving: saving would record its transition twice."""

    def __init__(self, kpi_ids: Sequence[str]) -> None:
        self.kpi_ids = tuple(kpi_ids)
        shown = ", ".join(repr(k) for k in self.kpi_ids[:5])
        more = f" and {len(self.kpi_ids) - 5} more" if len(self.kpi_ids) > 5 else ""
        super().__init__(
            f"KPI {shown}{more} evaluated meanwhile by another replica or process; "
            "this evaluation is dropped"
        )


class DeliveryError(KpiwatchError):
    """A channel could not deliver a notification."""

    def __init__(
        self, message: str, *, channel: str, retryable: bool, retry_after: float | None = None
    ) -> None:
        self.channel = channel
        self.retryable = retryable
        self.retry_after = retry_after
        super().__init__(f"{channel}: {redact(message)}")
