"""`kpiwatch test`: rule unit tests in YAML (SPEC §3a), run through :mod:`kpiwatch.replay`."""
