"""What the daemon must not import at start for a push-only rule set.

Every module imported stays resident for the life of the process (issue 6's memory
budget); these are needed only on some paths: Alembic and Mako to migrate an older
schema, requests/urllib3 for HTTP, CSV and Prometheus sources and webhooks, slack_sdk
when Slack is configured, Jinja2 and Pillow when a page or an email is rendered. The
test libraries must never be imported at run time. It runs in a fresh interpreter:
this test process has imported most of them already.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from kpiwatch.store.repository import Store

ON_DEMAND = ("alembic", "mako", "requests", "urllib3", "slack_sdk", "jinja2", "PIL")
NEVER = ("hypothesis", "schemathesis", "pytest", "httpx", "psycopg", "pymysql")

# The daemon's start, short of the scheduler and the HTTP thread: `kpiwatch run` has
# imported the CLI; App() opens the store, loads the rules, builds channels, outbox,
# metrics; the web app is built; one cycle runs and its notifications are delivered.
DAEMON = """
import json, sys
import kpiwatch.cli, kpiwatch.runtime.daemon
from kpiwatch.config.settings import Settings
from kpiwatch.runtime.app import App
from kpiwatch.web.app import create_app
app = App(Settings(http_port=0))
create_app(app.web_context())
result = app.run_once()
app.close()
print(json.dumps({"modules": sorted(sys.modules), "evaluated": result.stats.evaluated}))
"""


def _rules(root: Path) -> Path:
    rules = root / "rules"
    rules.mkdir()
    (rules / "kpis.yaml").write_text(
        "kpis:\n"
        "  - {id: signups, name: Signups, owner: growth@example.com, source: push,\n"
        "     direction: higher_is_better, every: 5m, thresholds: {yellow: 100, red: 50}}\n"
    )
    return rules


def _loaded(tmp_path: Path, script: str) -> set[str]:
    """The top-level packages ``script`` has imported, run in a fresh interpreter on a
    push-only rule set and an already migrated store (a restart, the usual start)."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    Store.open(url).close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KPIWATCH_")}
    env |= {"KPIWATCH_DATABASE_URL": url, "KPIWATCH_RULES_DIR": str(_rules(tmp_path)),
            "KPIWATCH_LOG_LEVEL": "error"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["evaluated"] == 1  # it did start and run a cycle
    return {name.split(".")[0] for name in report["modules"]}


def test_a_push_only_daemon_starts_without_the_on_demand_libraries(tmp_path: Path) -> None:
    loaded = _loaded(tmp_path, DAEMON)
    assert {"kpiwatch", "sqlalchemy", "fastapi"} <= loaded  # the probe itself works
    assert sorted(loaded & {*ON_DEMAND, *NEVER}) == []


# `kpiwatch run --once` (cron): the CLI, App(), one cycle; it serves nothing
RUN_ONCE = """
import json, sys
import kpiwatch.cli, kpiwatch.runtime.daemon
from kpiwatch.config.settings import Settings
from kpiwatch.runtime.app import App
app = App(Settings(http_port=0))
result = app.run_once()
app.close()
print(json.dumps({"modules": sorted(sys.modules), "evaluated": result.stats.evaluated}))
"""
WEB_ONLY = ("fastapi", "starlette", "uvicorn")


def test_run_once_imports_no_web_framework(tmp_path: Path) -> None:
    loaded = _loaded(tmp_path, RUN_ONCE)
    assert "kpiwatch" in loaded
    assert sorted(loaded & set(WEB_ONLY)) == []
