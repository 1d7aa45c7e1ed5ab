"""`kpiwatch demo`: a sample warehouse, sample rules, the daemon on embedded defaults."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

from kpiwatch.demo.warehouse import build_warehouse

RULES_PACKAGE = "kpiwatch.demo"


def demo_environment(directory: Path, today: datetime) -> dict[str, str]:
    """The variables the sample rules interpolate: warehouse URL and glide-path dates."""
    return {
        "DEMO_WAREHOUSE_URL": f"sqlite:///{(directory / 'warehouse.db').resolve()}",
        "DEMO_BASELINE_DATE": (today - timedelta(days=180)).date().isoformat(),
        "DEMO_TARGET_DATE": (today + timedelta(days=180)).date().isoformat(),
    }


def copy_rules(target: Path, values: Mapping[str, str] | None = None) -> list[Path]:
    """Copy the packaged sample rules into ``target``; returns the files written.

    ``values`` are written in place of their ``${NAME}`` / ``${NAME:-default}``
    references, so the copied rules say the same to every command run on them
    (`kpiwatch status` in the demo's folder judges what `kpiwatch demo` judged).
    """
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for entry in resources.files(RULES_PACKAGE).joinpath("rules").iterdir():
        if entry.name.endswith(".yaml"):
            text = entry.read_text(encoding="utf-8")
            for name, value in (values or {}).items():
                reference = re.compile(rf"\$\{{{re.escape(name)}(?::-[^}}]*)?\}}")
                text = reference.sub(value.replace("\\", "\\\\"), text)
            path = target / entry.name
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return sorted(written)


def prepare_demo(directory: Path, today: datetime | None = None) -> dict[str, object]:
    """Build the demo's files; set its environment; return settings overrides."""
    now = today or datetime.now(UTC)
    directory.mkdir(parents=True, exist_ok=True)
    build_warehouse(directory / "warehouse.db", now.date())
    copy_rules(directory / "rules", demo_environment(directory, now))
    return {
        "rules_dir": directory / "rules",
        "database_url": f"sqlite:///{directory / 'kpiwatch.db'}",
    }
