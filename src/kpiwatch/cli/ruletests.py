"""`test`: run rule unit tests (SPEC §3a)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from kpiwatch.cli.common import EXIT_FAILURES, EXIT_USAGE, friendly_errors, load_settings
from kpiwatch.cli.group import main
from kpiwatch.errors import RuleLoadError


@main.command("test")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.pass_context
@friendly_errors
def test_command(ctx: click.Context, files: tuple[Path, ...]) -> None:
    """Run rule unit tests: exit 0 all pass, 1 failures, 2 a malformed test file."""
    from kpiwatch.ruletest.suite import load_tests, run_tests

    settings = load_settings(ctx)
    loaded = []
    malformed = 0
    for path in files:
        try:
            loaded.append(load_tests(path, settings.tz, os.environ))
        except RuleLoadError as exc:
            malformed += len(exc.problems)
            click.echo("\n".join(str(p) for p in exc.problems), err=True)
    if malformed:
        click.echo(f"{malformed} problem(s) in the test files; no test was run", err=True)
        sys.exit(EXIT_USAGE)
    checks = failed = 0
    for tests in loaded:
        made, failures = run_tests(
            tests, tz=settings.tz, review_time=settings.review_time,
            oncall_emails=settings.oncall_emails,
        )  # fmt: skip
        checks += made
        failed += len(failures)
        for failure in failures:
            click.echo(str(failure))
        cases = len(tests.cases)
        verdict = "FAILED" if failures else "ok"
        click.echo(f"{tests.file}: {verdict}: {cases} case(s), {made} check(s)", err=True)
    click.echo(f"{checks - failed} passed, {failed} failed")
    if failed:
        sys.exit(EXIT_FAILURES)
