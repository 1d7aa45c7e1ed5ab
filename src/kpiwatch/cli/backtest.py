"""`backtest`: what the rules would have done over stored history (SPEC §3a)."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click
from pydantic import SecretStr

from kpiwatch.cli.common import (
    fail,
    friendly_errors,
    kpi_or_exit,
    load_settings,
    load_settings_rules,
    parse_time,
)
from kpiwatch.cli.group import main
from kpiwatch.config.loader import load_rules

if TYPE_CHECKING:  # the command imports these when it runs: `kpiwatch --help` stays light
    from kpiwatch.backtest.run import Request
    from kpiwatch.model import Observation


@main.command("backtest")
@click.argument("kpi_ids", nargs=-1)
@click.option("--all", "all_kpis", is_flag=True, help="Every KPI of the rules.")
@click.option("--from", "from_text", help="Start (ISO 8601); default each KPI's first value.")
@click.option("--to", "to_text", help="End (ISO 8601); default now.")
@click.option("--fetch", is_flag=True, help="Read each KPI's series from its source first.")
@click.option("--store", "store_fetched", is_flag=True, help="With --fetch: keep what was read.")
@click.option(
    "--compare",
    "compare_dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Replay under this rules directory too and print the difference.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--jobs", type=click.IntRange(min=1), help="Worker processes (default: one per CPU).")
@click.pass_context
@friendly_errors
def backtest_command(
    ctx: click.Context,
    kpi_ids: tuple[str, ...],
    all_kpis: bool,
    from_text: str | None,
    to_text: str | None,
    fetch: bool,
    store_fetched: bool,
    compare_dir: Path | None,
    as_json: bool,
    jobs: int | None,
) -> None:
    """Replay history through the rules: the status changes, escalations, reviews and
    notifications they would have produced. Changes nothing (unless --fetch --store)."""
    from kpiwatch.backtest import report
    from kpiwatch.backtest.run import Request, fetched_history, replay_parts
    from kpiwatch.runtime.standalone import standalone_runner
    from kpiwatch.store.engine import missing_sqlite_file

    settings = load_settings(ctx)
    loaded = load_settings_rules(settings)
    rules = loaded.rules
    if all_kpis == bool(kpi_ids):
        fail("name the KPIs to replay, or give --all")
    for kpi_id in kpi_ids:
        kpi_or_exit(rules, kpi_id)
    if store_fetched and not fetch:
        fail("--store keeps what --fetch reads: give both")
    other = None
    if compare_dir is not None:
        other = load_rules(compare_dir, file_roots=settings.file_roots).rules
    now = datetime.now(UTC)
    end = parse_time(to_text, settings) if to_text else now
    start = parse_time(from_text, settings) if from_text else None
    if start is not None and start >= end:
        fail(f"--from {start.isoformat()} is not before --to {end.isoformat()}")
    ids = list(kpi_ids) or [kpi.id for kpi in rules.kpis]
    fetched: dict[str, list[Observation]] = {}
    url: str | None = settings.database_url.get_secret_value()
    if fetch and not store_fetched and url is not None and missing_sqlite_file(url):
        url = None  # nothing stored yet, and nothing to store: replay what is fetched
        settings = settings.model_copy(update={"database_url": SecretStr("sqlite://")})
    # opens (and migrates) the store like every command; the workers then only read it
    with standalone_runner(settings, loaded, create=store_fetched) as (store, runner):
        if fetch:
            fetched, problems = fetched_history(runner.workspace, ids, now)
            for problem in problems:
                click.echo(f"kpiwatch: {problem}; replaying what is stored", err=True)
            if store_fetched:
                stored = store.add_observations(o for obs in fetched.values() for o in obs)
                click.echo(f"stored {stored} new observation(s)", err=True)
    request = Request(
        rules, url, start, end, settings.tz,
        settings.review_time, settings.oncall_emails, other, as_json, fetched,
    )  # fmt: skip
    totals = report.Totals()
    # the rules live as long as this process: the workers' collections need not walk them
    gc.freeze()

    def chunks() -> Iterator[str]:
        for part in replay_parts(request, ids, jobs or os.cpu_count() or 1):
            totals.add_part(part.totals)
            yield from part.chunks

    if as_json:
        for chunk in report.json_document(chunks(), start or _earliest(request, ids), end):
            click.echo(chunk, nl=False)
        click.echo()
    else:
        for chunk in chunks():
            click.echo(chunk, nl=False)
        click.echo(totals.text() if other is None else totals.compared_text())
    if totals.missing:
        click.echo(f"kpiwatch: not in {compare_dir}: {', '.join(totals.missing)}", err=True)


def _earliest(request: Request, kpi_ids: list[str]) -> datetime:
    """The first moment replayed when no --from is given: the oldest observation."""
    from kpiwatch.store.history import earliest
    from kpiwatch.store.repository import Store

    if request.database_url is None:  # only fetched series
        points = [o.observed_at for series in request.fetched.values() for o in series]
        return min((p for p in points if p <= request.end), default=request.end)
    store = Store.open(request.database_url, migrate=False)
    try:
        return earliest(store, kpi_ids, until=request.end) or request.end
    finally:
        store.close()
