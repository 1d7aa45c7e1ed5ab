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
from kpiwatch.config.rules import RuleSet
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
    _check_source_roles(loaded.rules)
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


def _check_source_roles(rules: RuleSet) -> None:
    """Connect each SQL source: a privileged role exits 2 (ConfigError); unreachable warns."""
    from kpiwatch.sources.registry import build_sources, close_all
    from kpiwatch.sources.sql import check_roles

    sources = build_sources(rules, lambda _kpi_id: None)
    try:
        unreachable = check_roles(sources)
    finally:
        close_all(sources)
    for problem in unreachable:
        click.echo(f"warning: {problem} (its role is checked when it answers)", err=True)
