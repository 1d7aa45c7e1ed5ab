"""Running the real `kpiwatch` command in a subprocess, with bounded waits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

KPIWATCH = [sys.executable, "-m", "kpiwatch"]


def environment(workdir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KPIWATCH_")}
    env.update(
        {
            "KPIWATCH_CONFIG": str(workdir / "absent.toml"),
            "KPIWATCH_DATABASE_URL": f"sqlite:///{workdir}/state.db",
            "KPIWATCH_RULES_DIR": str(workdir / "rules"),
            "KPIWATCH_LOG_FORMAT": "json",
            "KPIWATCH_HTTP_PORT": "0",  # a free port: daemons of parallel tests never clash
        }
    )
    env.update(extra)
    return env


def kpiwatch(
    workdir: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KPIWATCH, *args],
        cwd=workdir,
        env=env or environment(workdir),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def status_json(workdir: Path, env: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    result = kpiwatch(workdir, "status", "--json", env=env)
    assert result.returncode == 0, result.stderr
    return {row["id"]: row for row in json.loads(result.stdout)}


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
