"""The `kpiwatch` command group and its global options."""

from __future__ import annotations

import os
from pathlib import Path

import click

from kpiwatch import __version__


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
