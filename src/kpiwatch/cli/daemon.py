"""`run` and `demo`: the daemon, for real or on sample data."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from kpiwatch.cli.common import (
    EXIT_FAILURES,
    friendly_errors,
    load_settings,
)
from kpiwatch.cli.group import main


@main.command()
@click.option("--once", is_flag=True, help="Evaluate every KPI once, deliver, exit (for cron).")
@click.pass_context
@friendly_errors
def run(ctx: click.Context, once: bool) -> None:
    """Run the daemon (or one cycle with --once)."""
    from kpiwatch.runtime.app import App
    from kpiwatch.runtime.daemon import Daemon
    from kpiwatch.runtime.systemd import SystemdNotifier

    app = App(load_settings(ctx))
    app.keep_for_good()  # the rules and wiring live as long as this process
    if not once:
        sys.exit(Daemon(app, SystemdNotifier.from_env()).run())
    try:
        result = app.run_once()
    finally:
        app.close()
    counts = ", ".join(f"{n} {s}" for s, n in sorted(result.stats.by_status.items()))
    click.echo(
        f"evaluated {result.stats.evaluated} KPIs ({counts or 'none'}); "
        f"{result.stats.failed} failed; {result.reviews_due} reviews due; "
        f"{result.reminders} reminders; "
        f"{result.delivered} notifications delivered, {result.undelivered} left for next run"
    )
    if result.push_error is not None:
        click.echo(f"push to the Pushgateway failed: {result.push_error}", err=True)
    if result.stats.failed or result.push_error is not None:
        sys.exit(EXIT_FAILURES)


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
    base = load_settings(ctx).base_url
    click.echo(
        f"kpiwatch demo in {directory}/: sample warehouse {directory}/warehouse.db, "
        f"rules {directory}/rules/, state {directory}/kpiwatch.db\n"
        + ("" if once else f"Status board: {base}/   metrics: {base}/metrics   "
           f"API: {base}/api/v1/kpis\n")
        + "Notifications go to this log (no Slack or SMTP configured). In another terminal:\n"
        f"  .venv/bin/kpiwatch --rules-dir {directory}/rules --database-url "
        f"sqlite:///{directory}/kpiwatch.db status\n"
        "Stop with Ctrl-C.\n"
    )
    if once:
        from kpiwatch.cli.kpis import status

        ctx.invoke(run, once=True)
        ctx.invoke(status, as_json=False)
    else:
        ctx.invoke(run, once=False)
