"""The command line: parse, call, print, exit code. No logic lives here.

Exit codes: 0 success, 1 check/test failures, 2 usage or configuration error.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click
from pydantic import ValidationError

from kpiwatch import __version__
from kpiwatch.config.loader import load_rules
from kpiwatch.config.rules import RuleSet
from kpiwatch.config.settings import Settings
from kpiwatch.errors import ConfigError, RuleLoadError, SourceError, StoreError
from kpiwatch.logs import configure_logging

P = ParamSpec("P")
R = TypeVar("R")

EXIT_FAILURES = 1
EXIT_USAGE = 2


def _fail(message: str, code: int = EXIT_USAGE) -> None:
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
            _fail(f"invalid settings: {problems}")
        except RuleLoadError as exc:
            click.echo("\n".join(str(p) for p in exc.problems), err=True)
            _fail(f"{len(exc.problems)} error(s) in the rules")
        except (ConfigError, StoreError) as exc:
            _fail(str(exc))
        raise AssertionError("unreachable")  # _fail exits

    return wrapper


def load_settings(ctx: click.Context) -> Settings:
    overrides: dict[str, Any] = {k: v for k, v in ctx.obj.items() if v is not None}
    settings = Settings(**overrides)
    configure_logging(settings.effective_log_format, settings.log_level)
    return settings


def _kpi_or_exit(rules: RuleSet, kpi_id: str) -> None:
    if kpi_id not in rules.by_id:
        close = difflib.get_close_matches(kpi_id, list(rules.by_id), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        _fail(f"no KPI {kpi_id!r} in the rules{hint}")


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML settings file (default config/kpiwatch.toml; env KPIWATCH_CONFIG).",
)
@click.option(
    "--rules-dir",
    type=click.Path(path_type=Path),
    help="Directory of rule files (env KPIWATCH_RULES_DIR).",
)
@click.option("--database-url", help="State store URL (env KPIWATCH_DATABASE_URL).")
@click.version_option(__version__, prog_name="kpiwatch")
@click.pass_context
def main(
    ctx: click.Context, config_file: Path | None, rules_dir: Path | None, database_url: str | None
) -> None:
    """kpiwatch: watch business KPIs, escalate the red ones, tell people."""
    if config_file is not None:
        os.environ["KPIWATCH_CONFIG"] = str(config_file)
    ctx.obj = {"rules_dir": rules_dir, "database_url": database_url}


@main.command()
@click.option("--once", is_flag=True, help="Evaluate every KPI once, deliver, exit (for cron).")
@click.pass_context
@friendly_errors
def run(ctx: click.Context, once: bool) -> None:
    """Run the daemon (or one cycle with --once)."""
    from kpiwatch.runtime.app import App
    from kpiwatch.runtime.daemon import Daemon

    app = App(load_settings(ctx))
    if not once:
        sys.exit(Daemon(app).run())
    try:
        result = app.run_once()
    finally:
        app.close()
    counts = ", ".join(f"{n} {s}" for s, n in sorted(result.stats.by_status.items()))
    click.echo(
        f"evaluated {result.stats.evaluated} KPIs ({counts or 'none'}); "
        f"{result.stats.failed} failed; {result.reviews_due} reviews due; "
        f"{result.delivered} notifications delivered, {result.undelivered} left for next run"
    )
    if result.stats.failed:
        sys.exit(EXIT_FAILURES)


@main.command()
@click.option("--strict", is_flag=True, help="Also apply the governance lints.")
@click.pass_context
@friendly_errors
def check(ctx: click.Context, strict: bool) -> None:
    """Validate the rules: exit 0 valid, 1 invalid."""
    from kpiwatch.config.lint import lint

    settings = load_settings(ctx)
    try:
        loaded = load_rules(settings.rules_dir)
    except RuleLoadError as exc:
        click.echo("\n".join(str(p) for p in exc.problems))
        click.echo(f"{len(exc.problems)} error(s)", err=True)
        sys.exit(EXIT_FAILURES)
    problems = lint(loaded) if strict else []
    for problem in problems:
        click.echo(str(problem))
    if problems:
        click.echo(f"{len(problems)} governance problem(s)", err=True)
        sys.exit(EXIT_FAILURES)
    click.echo(
        f"ok: {len(loaded.rules.kpis)} KPIs, {len(loaded.rules.sources)} sources, "
        f"{len(loaded.rules.teams)} teams in {len(loaded.files)} file(s)"
    )


@main.command("eval")
@click.argument("kpi_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@friendly_errors
def eval_(ctx: click.Context, kpi_id: str, as_json: bool) -> None:
    """Fetch and evaluate one KPI now; changes nothing."""
    from kpiwatch.render_text import evaluation_json, evaluation_text
    from kpiwatch.runtime.standalone import evaluate_without_saving

    settings = load_settings(ctx)
    loaded = load_rules(settings.rules_dir)
    _kpi_or_exit(loaded.rules, kpi_id)
    kpi = loaded.rules.by_id[kpi_id]
    evaluation, previous = evaluate_without_saving(settings, loaded, kpi_id)
    if as_json:
        _print_json(evaluation_json(kpi, evaluation, previous))
    else:
        click.echo(evaluation_text(kpi, evaluation, previous))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array, one object per KPI.")
@click.pass_context
@friendly_errors
def status(ctx: click.Context, as_json: bool) -> None:
    """Every KPI: value, target, status, since, review cadence, escalation, next review."""
    from kpiwatch.overview import overview
    from kpiwatch.render_text import status_table
    from kpiwatch.store.repository import Store

    settings = load_settings(ctx)
    loaded = load_rules(settings.rules_dir)
    store = Store.open(settings.database_url.get_secret_value())
    try:
        rows = overview(loaded.rules, store.states())
    finally:
        store.close()
    if as_json:
        _print_json([row.as_json() for row in rows])
    else:
        click.echo(status_table(rows))


@main.command()
@click.argument("kpi_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--limit", default=30, show_default=True, help="Most recent observations shown.")
@click.pass_context
@friendly_errors
def history(ctx: click.Context, kpi_id: str, as_json: bool, limit: int) -> None:
    """Observations, status changes and events of one KPI."""
    from kpiwatch.render_text import history_json, history_text
    from kpiwatch.store.repository import Store

    settings = load_settings(ctx)
    loaded = load_rules(settings.rules_dir)
    _kpi_or_exit(loaded.rules, kpi_id)
    kpi = loaded.rules.by_id[kpi_id]
    store = Store.open(settings.database_url.get_secret_value())
    try:
        observations = store.history(kpi_id, limit=limit)
        changes = store.status_changes(kpi_id)
        events = store.events(kpi_id=kpi_id)
    finally:
        store.close()
    if as_json:
        _print_json(history_json(kpi, observations, changes, events))
    else:
        click.echo(history_text(kpi, observations, changes, events))


def _parse_time(text: str, settings: Settings) -> datetime:
    """ISO 8601 date or date-time; without an offset it is in KPIWATCH_TIMEZONE."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        _fail(f"invalid time {text!r}: use ISO 8601, e.g. 2026-11-23 or 2026-11-23T08:00:00+01:00")
        raise  # unreachable: _fail exits
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=settings.tz)
    return moment.astimezone(UTC)


@main.command()
@click.argument("kpi_id")
@click.argument("value", type=float)
@click.option("--at", "at_text", help="When the value was true (ISO 8601); default now.")
@click.option("--json", "as_json", is_flag=True, help="Print the evaluation as JSON.")
@click.pass_context
@friendly_errors
def push(ctx: click.Context, kpi_id: str, value: float, at_text: str | None, as_json: bool) -> None:
    """Record a value of a push KPI and evaluate it at once."""
    from kpiwatch.pushes import record_push
    from kpiwatch.render_text import evaluation_json, evaluation_text
    from kpiwatch.runtime.standalone import standalone_runner

    settings = load_settings(ctx)
    loaded = load_rules(settings.rules_dir)
    _kpi_or_exit(loaded.rules, kpi_id)
    kpi = loaded.rules.by_id[kpi_id]
    now = datetime.now(UTC)
    at = _parse_time(at_text, settings) if at_text else now
    with standalone_runner(settings, loaded) as (store, runner):
        previous = store.get_state(kpi_id)
        evaluation = record_push(runner, store, kpi, value, at, now)
    if as_json:
        _print_json(evaluation_json(kpi, evaluation, previous))
    else:
        click.echo(f"recorded {value:g} for {kpi_id} at {at.isoformat()}")
        click.echo(evaluation_text(kpi, evaluation, previous, saved=True))


@main.command("backfill")
@click.argument("kpi_id")
@click.option(
    "--from",
    "from_text",
    help="Earliest time to load (ISO 8601); default: the KPI's range, else 365 days.",
)
@click.pass_context
@friendly_errors
def backfill_cmd(ctx: click.Context, kpi_id: str, from_text: str | None) -> None:
    """Load a KPI's history from its source; running it twice stores each point once."""
    from kpiwatch.backfill import backfill, plan
    from kpiwatch.runtime.standalone import standalone_runner

    settings = load_settings(ctx)
    loaded = load_rules(settings.rules_dir)
    _kpi_or_exit(loaded.rules, kpi_id)
    kpi = loaded.rules.by_id[kpi_id]
    if kpi.source in ("formula", "push"):
        _fail(f"KPI {kpi_id!r} has no source to backfill from (source: {kpi.source})")
    now = datetime.now(UTC)
    start = (
        _parse_time(from_text, settings) if from_text else now - (kpi.range or timedelta(days=365))
    )
    with standalone_runner(settings, loaded) as (store, runner):
        source = runner.workspace.sources[kpi.source]
        steps = plan(source, start, now)
        try:
            with click.progressbar(
                length=len(steps), label=f"backfilling {kpi_id}", file=sys.stderr
            ) as bar:
                result = backfill(source, kpi, store, steps, now, on_step=bar.update)
        except SourceError as exc:
            _fail(str(exc), EXIT_FAILURES)
            raise  # unreachable: _fail exits
    click.echo(
        f"{kpi_id}: {result.points} points from {start.date()} on, {result.new} new, "
        f"{result.points - result.new} already stored"
    )


@main.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo"),
    show_default=True,
    help="Where the demo keeps its files.",
)
@click.option("--once", is_flag=True, help="One cycle, print the status, exit.")
@click.pass_context
@friendly_errors
def demo(ctx: click.Context, directory: Path, once: bool) -> None:
    """The daemon on embedded defaults: sample warehouse and rules, notifications to the log."""
    from kpiwatch.demo import prepare_demo

    ctx.obj.update(prepare_demo(directory))
    click.echo(
        f"kpiwatch demo in {directory}/: sample warehouse {directory}/warehouse.db, "
        f"rules {directory}/rules/, state {directory}/kpiwatch.db\n"
        "Notifications go to this log (no Slack or SMTP configured). In another terminal:\n"
        f"  .venv/bin/kpiwatch --rules-dir {directory}/rules --database-url "
        f"sqlite:///{directory}/kpiwatch.db status\n"
        "Stop with Ctrl-C.\n"
    )
    if once:
        ctx.invoke(run, once=True)
        ctx.invoke(status, as_json=False)
    else:
        ctx.invoke(run, once=False)


if __name__ == "__main__":  # pragma: no cover
    main()
