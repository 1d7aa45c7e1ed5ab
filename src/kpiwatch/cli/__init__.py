"""The command line: parse, call, print, exit code. No logic lives here.

One module per group of commands; importing them registers them on ``main``.
"""

from kpiwatch.cli import daemon, kpis, notifications, rules, silences  # noqa: F401  (registers)
from kpiwatch.cli.group import main

__all__ = ["main"]
