"""The kpiwatch error tree.

    KpiwatchError
    ├── ConfigError              settings or rules cannot be used
    │   └── RuleLoadError        one or more rule-file problems, each with file:line:col
    ├── SourceError              a source could not give a usable value (knows source and KPI)
    │   ├── SourceTimeout
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

_URL_PASSWORD = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]*)@"
)
_TOKENS = re.compile(r"(?i)(bearer\s+|xox[abprs]-|token=|password=|apikey=|api_key=)([^\s&\"',]+)")


def redact(text: str) -> str:
    """Hide passwords in URLs and bearer/Slack tokens in a piece of text."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _TOKENS.sub(lambda m: f"{m[1]}***", text)


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


class SourceTimeout(SourceError):
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
