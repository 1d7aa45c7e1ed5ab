"""What every command shares: settings, clear errors, exit codes, output helpers.

Exit codes: 0 success, 1 check/test failures, 2 usage or configuration error.
"""

from __future__ import annotations

import difflib
import functools
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

import click
from pydantic import ValidationError

from kpiwatch.config import secrets
from kpiwatch.config.loader import LoadedRules, load_rules
from kpiwatch.config.rules import Kpi, RuleSet
from kpiwatch.config.settings import Settings
from kpiwatch.errors import ConfigError, RuleLoadError, StoreError
from kpiwatch.logs import configure_logging

P = ParamSpec("P")
R = TypeVar("R")

EXIT_FAILURES = 1
EXIT_USAGE = 2


def fail(message: str, code: int = EXIT_USAGE) -> None:
    click.echo(f"kpiwatch: {message}", err=True)
    sys.exit(code)


def friendly_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Internal errors become one clear line and exit 2, not a traceback."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except ValidationError as exc:
            problems = "; ".join(
                f"KPIWATCH_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
                for e in exc.errors()
            )
            fail(f"invalid settings: {problems}")
        except RuleLoadError as exc:
            click.echo("\n".join(str(p) for p in exc.problems), err=True)
            fail(f"{len(exc.problems)} error(s) in the rules")
        except (ConfigError, StoreError) as exc:
            fail(str(exc))
        raise AssertionError("unreachable")  # _fail exits

    return wrapper


def load_settings(ctx: click.Context) -> Settings:
    overrides: dict[str, Any] = {k: v for k, v in ctx.obj.items() if v is not None}
    settings = Settings(**overrides)
    configure_logging(settings.effective_log_format, settings.log_level)
    secrets.register(settings)
    return settings


def load_settings_rules(settings: Settings) -> LoadedRules:
    """The rules of ``settings.rules_dir`` (CSV paths inside it or ``file_roots``), their
    secrets known to redaction."""
    loaded = load_rules(settings.rules_dir, file_roots=settings.file_roots,
                        cache_dir=settings.cache_dir)  # fmt: skip
    secrets.register(settings, loaded.rules)
    return loaded


def kpi_or_exit(rules: RuleSet, kpi_id: str) -> Kpi:
    """The KPI of that id; exits 2, suggesting a close id, when the rules have none."""
    kpi = rules.by_id.get(kpi_id)
    if kpi is None:
        close = difflib.get_close_matches(kpi_id, list(rules.by_id), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        fail(f"no KPI {kpi_id!r} in the rules{hint}")
        raise AssertionError("unreachable")  # fail exits
    return kpi


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def parse_time(text: str, settings: Settings) -> datetime:
    """ISO 8601 date or date-time; without an offset it is in KPIWATCH_TIMEZONE."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        fail(f"invalid time {text!r}: use ISO 8601, e.g. 2026-11-23 or 2026-11-23T08:00:00+01:00")
        raise  # unreachable: _fail exits
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=settings.tz)
    return moment.astimezone(UTC)
