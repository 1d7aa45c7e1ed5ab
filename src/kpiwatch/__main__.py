"""`python -m kpiwatch` is the `kpiwatch` command."""

from kpiwatch.cli import main

main()
