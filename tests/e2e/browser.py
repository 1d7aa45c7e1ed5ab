"""Headless Debian Chromium for tests: find it, run it, read the page as a person would."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("KPIWATCH_CHROMIUM", "/usr/bin/chromium")


def chromium_binary() -> str:
    """The Chromium to use; skips without one, fails when ``CI`` is set."""
    if Path(CHROMIUM).exists():
        return CHROMIUM
    found = shutil.which("chromium")
    if found is None:
        message = (
            f"Chromium not found at {CHROMIUM}: apt-get install chromium, or set KPIWATCH_CHROMIUM"
        )
        if os.environ.get("CI"):
            pytest.fail(f"CI is set, so this test must run: {message}")
        pytest.skip(message)
    return found


def run_chromium(binary: str, profile: Path, *args: str) -> str:
    """Runs headless Chromium (no network but localhost) and returns what it printed."""
    command = [
        binary, "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update", "--no-first-run",
        "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}", *args,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def visible_text(dom: str) -> str:
    """What a person reads: tags dropped, entities decoded, whitespace folded."""
    dom = re.sub(r"<(style|svg)\b.*?</\1>", " ", dom, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", dom)).split())


def keep_screenshot(shot: Path) -> None:
    """Copies a screenshot to ``$KPIWATCH_SCREENSHOTS`` (the README's pictures) when set."""
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    keep = os.environ.get("KPIWATCH_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, Path(keep) / shot.name)
