"""`check`: validate the rules."""

from __future__ import annotations

import sys

import click

from kpiwatch.cli.common import (
    EXIT_FAILURES,
    friendly_errors,
    load_settings,
    load_settings_rules,
)
from kpiwatch.cli.group import main
from kpiwatch.errors import RuleLoadError


@main.command()
@click.option("--strict", is_flag=True, help="Also apply the governance lints.")
@click.pass_context
@friendly_errors
def check(ctx: click.Context, strict: bool) -> None:
    """Validate the rules: exit 0 valid, 1 invalid."""
    from kpiwatch.config.lint import lint

    settings = load_settings(ctx)
    try:
        loaded = load_settings_rules(settings)
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
