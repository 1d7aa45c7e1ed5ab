"""A real Prometheus Alertmanager for tests (Debian's prometheus-alertmanager).

``running_alertmanager()`` starts one on a free port of 127.0.0.1, clustering
off, its storage in the test's directory, and always stops it; without the
binary it skips, or fails when ``CI`` is set. Its one route sends every
notification (resolved ones too) to ``webhook_url``, when given, at once.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests
from processes import require_tool, stop
from prometheus_server import free_port

ALERTMANAGER = os.environ.get("KPIWATCH_TEST_ALERTMANAGER", "prometheus-alertmanager")
READY_WITHIN = 20.0  # seconds


@contextmanager
def running_alertmanager(workdir: Path, *, webhook_url: str | None = None) -> Iterator[str]:
    """An Alertmanager on a free port; yields its URL."""
    binary = require_tool(ALERTMANAGER, "apt-get install prometheus-alertmanager")
    receiver: dict[str, object] = {"name": "kpiwatch-test"}
    if webhook_url:
        receiver["webhook_configs"] = [{"url": webhook_url, "send_resolved": True}]
    config = {
        # notify at once and on every change: tests wait seconds, not Alertmanager's minutes
        "route": {"receiver": "kpiwatch-test", "group_by": ["kpi", "severity"],
                  "group_wait": "0s", "group_interval": "1s", "repeat_interval": "1h"},
        "receivers": [receiver],
    }  # fmt: skip
    config_path = workdir / "alertmanager.yml"
    config_path.write_text(json.dumps(config))  # JSON is YAML
    port = free_port()
    args = [
        binary,
        f"--config.file={config_path}",
        f"--storage.path={workdir / 'alertmanager-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",  # no gossip: no second port, no peers
    ]
    log_path = workdir / "alertmanager.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_ready(url, process, log_path)
            yield url
        finally:
            stop(process)


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_WITHIN
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"alertmanager exited with {process.returncode}:\n{tail}")
        try:
            if requests.get(f"{url}/-/ready", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass  # not listening yet
        time.sleep(0.1)
    raise RuntimeError(f"alertmanager at {url} not ready after {READY_WITHIN:g}s")
