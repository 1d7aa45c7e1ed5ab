"""No secret of the settings or the rules reaches any output of the real `kpiwatch`.

Sources fail in the ways that print their URLs (refused connections that urllib3
retries and warns about, 500s retried, 401s, a database that is not there), the
daemon and the commands run with Slack (a local fake of its Web API) and SMTP (a
real aiosmtpd) receiving what they send, and every byte they produce is searched.
"""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from helpers import KPIWATCH, environment, kpiwatch, wait_until

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from local_http import LocalServer, QuietHandler, serving
from prometheus_server import free_port
from slack_api import slack_api
from smtp_server import running_smtp

pytestmark = pytest.mark.slow

RETRY_TOKEN = "s3cr3t-retry-7Hq2Lk"


def _retry_rules(workdir: Path, port: int, every: str = "1h") -> None:
    # nothing listens on the port: each attempt is refused, and urllib3 logs
    # "Retrying (...) after connection broken by ...: /v1/mrr?token=...&page=2"
    (workdir / "rules").mkdir()
    (workdir / "rules" / "kpis.yaml").write_text(f"""
sources:
  api: {{type: http, url: "http://127.0.0.1:{port}/v1/mrr?token={RETRY_TOKEN}&page=2",
        retries: 2, timeout: 10s}}
kpis:
  - {{id: mrr, name: MRR, owner: ava@example.com, direction: higher_is_better, source: api,
     query: data.mrr, every: {every}, thresholds: {{red: 1}}}}
""")


def test_eval_shows_urllib3s_retry_warning_without_the_token(tmp_path: Path) -> None:
    _retry_rules(tmp_path, free_port())
    result = kpiwatch(tmp_path, "eval", "mrr")
    assert "Retrying" in result.stderr, result.stderr
    assert RETRY_TOKEN not in result.stderr + result.stdout
    # only the value is masked: the parameter after it is still there
    assert "token=***&page=2" in result.stderr


def test_daemon_log_shows_urllib3s_retry_warning_without_the_token(tmp_path: Path) -> None:
    _retry_rules(tmp_path, free_port(), every="1s")
    log = tmp_path / "daemon.log"
    with _daemon(tmp_path, environment(tmp_path), log):
        wait_until(lambda: "Retrying" in log.read_text(), 20, "urllib3's retry warning")
        wait_until(lambda: '"serving HTTP"' in log.read_text(), 20, "the HTTP server")
        # uvicorn's own logger (the server runs with log_config=None) joins the same pipeline
        serving = next(line for line in _lines(log) if line["event"] == "serving HTTP")
        host, port = serving["url"].removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as conn:
            conn.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            conn.recv(1024)
        wait_until(lambda: "Invalid HTTP request" in log.read_text(), 10, "uvicorn's warning")
    lines = _lines(log)  # every line is JSON: nothing printed around the pipeline
    assert RETRY_TOKEN not in log.read_text()
    # rendered by structlog like kpiwatch's own lines, with the library's logger name
    retrying = next(line for line in lines if line["event"].startswith("Retrying"))
    assert retrying["logger"] == "urllib3.connectionpool"
    assert retrying["level"] == "warning"
    assert "token=***&page=2" in retrying["event"]
    invalid = next(line for line in lines if "Invalid HTTP request" in line["event"])
    assert invalid["logger"] == "uvicorn.error"


def _lines(log: Path) -> list[dict[str, Any]]:
    """The complete lines written so far (the daemon may be writing the last one)."""
    text = log.read_text()
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]


@contextmanager
def _daemon(workdir: Path, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("w") as out:
        process = subprocess.Popen([*KPIWATCH, "run"], cwd=workdir, env=env, stdout=out,
                                   stderr=subprocess.STDOUT)  # fmt: skip
        try:
            yield process
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


# ------------------------------------------------------------------ all the secrets at once

# one of each kind; the names say where each is planted
SECRETS = {
    "sql_password": "dbpass-Zq81mVx",
    "basic_password": "basicpw-Jr52nTe",
    "bearer": "bearer-Wm73kPa",
    "header": "hdrkey-Lp64sQb",
    "url_token": "qstoken-Hx95dRc",
    "retry_token": "acctok-Nv27fGd",
    "prom_header": "promhdr-Ty38jKe",
    "csv_sig": "csvsig-Bk49wMf",
    "hook_token": "hooktok-Cs50xNg",
    "slack_token": "xoxb-4242-slacktok-Dg61yPh",
    "smtp_password": "smtppw-Ef72zQi",
    "api_token": "apitok-Fh83aRj",
    "webhook_secret": "whsecret-Gi94bSk",
    "read_token": "readtok-Hj05cTl",
    "metrics_token": "metricstok-Ik16dUm",
    "push_password": "pushpw-Jl27eVn",
}


class _Failing(QuietHandler):
    """401 for the basic-auth source, 500 for everything else (retried by the client)."""

    def do_GET(self) -> None:
        if self.path.startswith("/auth"):
            self.reply(401, b'{"error": "who are you?"}')
        else:
            self.reply(500, b'{"error": "database on fire"}')


def _rules(workdir: Path, http: str, closed: int) -> str:
    s = SECRETS
    return f"""
sources:
  warehouse: {{type: sql, url: "sqlite:///{workdir}/warehouse.db"}}
  pg: {{type: sql, url: "postgresql+psycopg://kpi:{s["sql_password"]}@127.0.0.1:{closed}/wh",
       owner: ops@example.com, timeout: 3s}}
  basic: {{type: http, url: "{http}/auth/m", owner: ops@example.com, retries: 0, timeout: 3s,
          auth: {{username: kpi, password: "{s["basic_password"]}"}}}}
  bearer: {{type: http, url: "{http}/m?token={s["url_token"]}&page=2", retries: 1,
           timeout: 5s, owner: ops@example.com, headers: {{X-Api-Key: "{s["header"]}"}},
           auth: {{bearer: "{s["bearer"]}"}}}}
  refused: {{type: http, owner: ops@example.com, retries: 2, timeout: 5s,
            url: "http://127.0.0.1:{closed}/m?access_token={s["retry_token"]}"}}
  prom: {{type: prometheus, url: "http://127.0.0.1:{closed}", owner: ops@example.com,
         headers: {{X-Scope-Key: "{s["prom_header"]}"}}, timeout: 3s}}
  sheet: {{type: csv, url: "{http}/data.csv?sig={s["csv_sig"]}", owner: ops@example.com,
          timeout: 3s}}
teams:
  growth: {{slack: "#growth", email: [growth@example.com],
           webhook: "http://127.0.0.1:{closed}/hook?token={s["hook_token"]}"}}
kpis:
  - {{id: errors, name: Error rate, owner: dana@example.com, team: growth, unit: "%",
     direction: lower_is_better, source: warehouse, query: SELECT value FROM errors, every: 2s,
     thresholds: {{yellow: 10, red: 20}}}}
  - {{id: orders, name: Orders, owner: dana@example.com, team: growth,
     direction: higher_is_better, source: pg, query: SELECT 1, every: 2s, thresholds: {{red: 0}}}}
  - {{id: signups, name: Signups, owner: dana@example.com, team: growth,
     direction: higher_is_better, source: basic, query: n, every: 2s, thresholds: {{red: 0}}}}
  - {{id: mrr, name: MRR, owner: dana@example.com, team: growth, direction: higher_is_better,
     source: bearer, query: n, every: 2s, thresholds: {{red: 0}}}}
  - {{id: churn, name: Churn, owner: dana@example.com, team: growth, direction: lower_is_better,
     source: refused, query: n, every: 2s, thresholds: {{red: 5}}}}
  - {{id: latency, name: Latency, owner: dana@example.com, team: growth,
     direction: lower_is_better, source: prom, query: up, every: 2s, thresholds: {{red: 5}}}}
  - {{id: margin, name: Margin, owner: dana@example.com, team: growth,
     direction: higher_is_better, source: sheet, query: margin, every: 2s, thresholds: {{red: 0}}}}
"""


def _get(url: str, token: str) -> requests.Response:
    """The page itself (behind KPIWATCH_READ_TOKEN / METRICS_TOKEN), not a login redirect."""
    response = requests.get(
        url, timeout=10, headers={"Authorization": f"Bearer {token}"}, allow_redirects=False
    )
    assert response.status_code == 200, (url, response.status_code)
    return response


def _leaks(outputs: dict[str, str], secrets: dict[str, str]) -> list[str]:
    return [
        f"{secret!r} ({what}) in {where}"
        for where, text in outputs.items()
        for what, secret in secrets.items()
        if secret in text
    ]


def test_no_secret_reaches_any_output(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "warehouse.db") as db:
        db.execute("CREATE TABLE errors (value REAL)")
        db.execute("INSERT INTO errors VALUES (25)")
    closed = free_port()  # nothing listens here
    outputs: dict[str, str] = {}
    s = SECRETS
    with (
        serving(LocalServer(_Failing)) as http,
        slack_api(token=s["slack_token"]) as slack,
        running_smtp(users={"kw": s["smtp_password"]}) as smtp,
    ):
        (tmp_path / "rules").mkdir()
        (tmp_path / "rules" / "kpis.yaml").write_text(_rules(tmp_path, http.base_url, closed))
        port = free_port()
        env = environment(
            tmp_path,
            KPIWATCH_HTTP_PORT=str(port),
            KPIWATCH_SLACK_TOKEN=s["slack_token"],
            KPIWATCH_SLACK_API_URL=slack.base_url,
            # not used while a token is set, but a secret this process knows
            KPIWATCH_SLACK_WEBHOOK_URL=slack.webhook_url,
            KPIWATCH_SMTP_HOST=smtp.host,
            KPIWATCH_SMTP_PORT=str(smtp.port),
            KPIWATCH_SMTP_USERNAME="kw",
            KPIWATCH_SMTP_PASSWORD=s["smtp_password"],
            KPIWATCH_SMTP_STARTTLS="false",
            KPIWATCH_API_TOKEN=s["api_token"],
            KPIWATCH_WEBHOOK_SECRET=s["webhook_secret"],
            KPIWATCH_READ_TOKEN=s["read_token"],
            KPIWATCH_METRICS_TOKEN=s["metrics_token"],
            KPIWATCH_PUSHGATEWAY_URL=f"http://pg:{s['push_password']}@127.0.0.1:{closed}",
            KPIWATCH_ONCALL_EMAILS="oncall@example.com",
            KPIWATCH_DELIVERY_TIMEOUT="4",  # run --once: the webhook's retries are later
        )
        secrets = {**SECRETS, "slack_webhook_url": slack.webhook_url}

        for command in (["check"], ["eval", "mrr"], ["eval", "churn"], ["eval", "signups"],
                        ["run", "--once"]):  # fmt: skip
            result = kpiwatch(tmp_path, *command, env=env)
            outputs[f"{' '.join(command)} stdout"] = result.stdout
            outputs[f"{' '.join(command)} stderr"] = result.stderr
        assert "ok: 7 KPIs" in outputs["check stdout"]
        assert "Retrying" in outputs["eval churn stderr"]  # urllib3's warning, with its URL
        assert "HTTP 500" in outputs["eval mrr stderr"] + outputs["eval mrr stdout"]
        assert "HTTP 401" in outputs["eval signups stderr"] + outputs["eval signups stdout"]
        assert "push" in outputs["run --once stderr"].lower()  # the Pushgateway was refused

        log = tmp_path / "daemon.log"
        base = f"http://127.0.0.1:{port}"
        with _daemon(tmp_path, env, log):

            def serving_pages() -> bool:
                try:
                    return requests.get(base + "/readyz", timeout=2).status_code in (200, 401)
                except requests.ConnectionError:
                    return False

            wait_until(serving_pages, 30, "the daemon to serve")
            wait_until(lambda: "Retrying" in log.read_text(), 20, "a retried fetch")
            read, metrics = s["read_token"], s["metrics_token"]
            for path in ("/", "/kpis/mrr", "/kpis/churn", "/api/v1/kpis", "/api/v1/kpis/mrr"):
                outputs[f"GET {path}"] = _get(base + path, read).text
                assert "mrr" in outputs[f"GET {path}"] or "churn" in outputs[f"GET {path}"]
            outputs["GET /metrics"] = _get(base + "/metrics", metrics).text
        outputs["daemon log"] = log.read_text()
        result = kpiwatch(tmp_path, "status", "--json", env=env)
        outputs["status --json"] = result.stdout + result.stderr

        # what Slack and the mail server received; the token itself goes where it must
        # (the Authorization header), so that field is left out
        outputs["slack requests"] = json.dumps(
            [{k: v for k, v in call.items() if k != "authorization"} for call in slack.calls]
        )
        with smtp.lock:
            outputs["emails"] = "\n".join(m.as_string() for m in smtp.messages)

    assert slack.posts(), "Slack received no message"
    assert smtp.messages, "no email arrived"
    assert smtp.logins  # the SMTP password was used, and accepted
    assert set(smtp.logins) == {"kw"}
    assert "database on fire" in outputs["GET /kpis/mrr"] + outputs["GET /api/v1/kpis/mrr"]
    assert "churn" in outputs["GET /metrics"]
    assert "Retrying" in outputs["daemon log"]
    for where in ("eval churn stderr", "run --once stderr", "daemon log", "status --json",
                  "GET /", "GET /api/v1/kpis", "slack requests", "emails"):  # fmt: skip
        assert outputs[where].strip(), f"{where} captured nothing"
    assert len(secrets) >= 15
    assert _leaks(outputs, secrets) == []
