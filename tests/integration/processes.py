"""Real programs in tests: find them (skip on a laptop, fail under CI) and stop them."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def unavailable(message: str) -> None:
    """Skips the test, or fails it when ``CI`` is set: CI must exercise it."""
    if os.environ.get("CI"):
        pytest.fail(f"CI is set, so this test must run: {message}")
    pytest.skip(message)


def require_tool(tool: str, hint: str = "") -> str:
    """The tool's path; without it the test skips, or fails when ``CI`` is set."""
    path = shutil.which(tool)
    if path is None:
        unavailable(f"{tool} is not installed" + (f": {hint}" if hint else ""))
        raise AssertionError("unreachable")  # for type checkers: skip/fail raise
    return path


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 10 s: never leaves the program running."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
