"""The command line: parse, call, print, exit code. No logic lives here.

One module per group of commands; importing them registers them on ``main``.
"""

from kpiwatch.cli import (  # noqa: F401  (registers)
    backtest,
    daemon,
    kpis,
    notifications,
    rules,
    ruletests,
    silences,
)
from kpiwatch.cli.group import main

__all__ = ["main"]
