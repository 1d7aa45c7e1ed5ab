"""Commands about KPIs: `eval`, `status`, `history`, `push`, `backfill`, `prune`."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

import click

from kpiwatch.cli.common import (
    EXIT_FAILURES,
    fail,
    friendly_errors,
    kpi_or_exit,
    load_settings,
    load_settings_rules,
    parse_time,
    print_json,
)
from kpiwatch.cli.group import main
from kpiwatch.errors import SourceError


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
    loaded = load_settings_rules(settings)
    kpi_or_exit(loaded.rules, kpi_id)
    kpi = loaded.rules.by_id[kpi_id]
    evaluation, previous = evaluate_without_saving(settings, loaded, kpi_id)
    if as_json:
        print_json(evaluation_json(kpi, evaluation, previous))
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
    loaded = load_settings_rules(settings)
    store = Store.open(settings.database_url.get_secret_value(), create=False)
    try:
        states = store.states()
        acks = {kpi_id: ack for kpi_id, state in states.items()
                if (ack := store.ack_for(kpi_id, state.since)) is not None}  # fmt: skip
        rows = overview(loaded.rules, states, acks)
    finally:
        store.close()
    if as_json:
        print_json([row.as_json() for row in rows])
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
    loaded = load_settings_rules(settings)
    kpi_or_exit(loaded.rules, kpi_id)
    kpi = loaded.rules.by_id[kpi_id]
    store = Store.open(settings.database_url.get_secret_value(), create=False)
    try:
        observations = store.history(kpi_id, limit=limit)
        changes = store.status_changes(kpi_id)
        events = store.events(kpi_id=kpi_id)
    finally:
        store.close()
    if as_json:
        print_json(history_json(kpi, observations, changes, events))
    else:
        click.echo(history_text(kpi, observations, changes, events))


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
    loaded = load_settings_rules(settings)
    kpi_or_exit(loaded.rules, kpi_id)
    kpi = loaded.rules.by_id[kpi_id]
    now = datetime.now(UTC)
    at = parse_time(at_text, settings) if at_text else now
    with standalone_runner(settings, loaded) as (store, runner):
        previous = store.get_state(kpi_id)
        evaluation = record_push(runner, store, kpi, value, at, now)
    if as_json:
        print_json(evaluation_json(kpi, evaluation, previous))
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
    loaded = load_settings_rules(settings)
    kpi_or_exit(loaded.rules, kpi_id)
    kpi = loaded.rules.by_id[kpi_id]
    if kpi.source in ("formula", "push"):
        fail(f"KPI {kpi_id!r} has no source to backfill from (source: {kpi.source})")
    now = datetime.now(UTC)
    start = (
        parse_time(from_text, settings) if from_text else now - (kpi.range or timedelta(days=365))
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
            fail(str(exc), EXIT_FAILURES)
            raise  # unreachable: _fail exits
    click.echo(
        f"{kpi_id}: {result.points} points from {start.date()} on, {result.new} new, "
        f"{result.points - result.new} already stored"
    )
    if settings.retention is not None:
        from kpiwatch.evaluation.retention import kept_history
        from kpiwatch.runtime.pruning import retention_text

        since = kept_history(kpi, now, settings.retention).since
        if start < since:
            click.echo(
                f"note: points before {since.date()} are older than the retention "
                f"(KPIWATCH_RETENTION={retention_text(settings.retention)}); the next "
                "prune deletes them (but the newest)",
                err=True,
            )


@main.command()
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@click.option("--retention", "asked", metavar="SPAN",
              help="This retention (90d, 12h) instead of KPIWATCH_RETENTION.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@friendly_errors
def prune(ctx: click.Context, dry_run: bool, asked: str | None, as_json: bool) -> None:
    """Delete the history older than the retention (the daemon does this hourly).

    Observations (each KPI keeps at least what its rules read, so no verdict changes),
    and the notifications, events and status changes that are done with."""
    from pydantic import TypeAdapter, ValidationError

    from kpiwatch.config.settings import RetentionSpan
    from kpiwatch.runtime.pruning import prune_history, retention_text
    from kpiwatch.store.repository import Store
    from kpiwatch.store.retention_store import PRUNED_TABLES

    settings = load_settings(ctx)
    retention = settings.retention
    if asked is not None:
        try:
            retention = TypeAdapter(RetentionSpan).validate_python(asked)
        except ValidationError as exc:
            fail(f"--retention {asked!r}: {exc.errors()[0]['msg']}")
    if retention is None:
        if as_json:
            print_json({"retention": None, "dry_run": dry_run,
                        "rows": dict.fromkeys(PRUNED_TABLES, 0)})  # fmt: skip
        else:
            click.echo("the retention is off (KPIWATCH_RETENTION=off): nothing pruned")
        return
    loaded = load_settings_rules(settings)
    store = Store.open(settings.database_url.get_secret_value(), create=False)
    try:
        rows = prune_history(store, loaded.rules, retention, datetime.now(UTC), dry_run=dry_run)
    finally:
        store.close()
    span = retention_text(retention)
    if as_json:
        print_json({"retention": span, "dry_run": dry_run, "rows": rows,
                    "kpis": len(loaded.rules.kpis)})  # fmt: skip
        return
    verb = "would delete" if dry_run else "deleted"
    click.echo(f"{verb} {rows['observations']:,} observations of {len(loaded.rules.kpis):,} "
               f"KPIs, {rows['status_changes']:,} status changes, {rows['events']:,} events "
               f"and {rows['outbox']:,} notifications (retention {span})")  # fmt: skip
