"""A real Prometheus Pushgateway for tests (Debian's prometheus-pushgateway).

``running_pushgateway()`` starts one on a free port of 127.0.0.1 without
persistence and always stops it; without the binary it skips, or fails when
``CI`` is set.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests
from processes import require_tool, stop
from prometheus_server import free_port

PUSHGATEWAY = os.environ.get("KPIWATCH_TEST_PUSHGATEWAY", "prometheus-pushgateway")
READY_WITHIN = 20.0  # seconds
USER = "kpiwatch"
PASSWORD = "s3cr3t:p@ss"
# bcrypt of PASSWORD: the Pushgateway's web config takes a hash, never the password
PASSWORD_HASH = "$2b$04$4U3EAxU.ElGQK6fSaxVTge3zfCEAaUVNWe61fp/bo0G0k/vjXYVZy"


@contextmanager
def running_pushgateway(workdir: Path, *, basic_auth: bool = False) -> Iterator[str]:
    """A Pushgateway on a free port; yields its URL (without credentials)."""
    binary = require_tool(PUSHGATEWAY, "apt-get install prometheus-pushgateway")
    port = free_port()
    args = [binary, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="]
    auth = None
    if basic_auth:
        config = workdir / "web.yml"
        config.write_text(f"basic_auth_users:\n  {USER}: '{PASSWORD_HASH}'\n")
        args.append(f"--web.config.file={config}")
        auth = (USER, PASSWORD)
    log_path = workdir / "pushgateway.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_ready(url, auth, process, log_path)
            yield url
        finally:
            stop(process)


def _wait_ready(
    url: str, auth: tuple[str, str] | None, process: subprocess.Popen[bytes], log: Path
) -> None:
    deadline = time.monotonic() + READY_WITHIN
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"pushgateway exited with {process.returncode}:\n{tail}")
        try:
            if requests.get(f"{url}/-/ready", auth=auth, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass  # not listening yet
        time.sleep(0.1)
    raise RuntimeError(f"pushgateway at {url} not ready after {READY_WITHIN:g}s")


