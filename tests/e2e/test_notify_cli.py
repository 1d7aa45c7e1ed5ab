"""`digest`, `outbox` and a bad Slack token, as a user meets them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from helpers import environment, kpiwatch

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from slack_api import slack_api
from smtp_server import running_smtp

RULES = """
kpis:
  - {id: nps, name: Net Promoter Score, owner: sam@example.com, direction: higher_is_better,
     source: push, thresholds: {yellow: 40, red: 30}, notify: {webhook: "http://127.0.0.1:9/x"}}
"""


def _setup(workdir: Path) -> None:
    (workdir / "rules").mkdir()
    (workdir / "rules" / "kpis.yaml").write_text(RULES)


def test_a_bad_slack_token_stops_the_start_with_a_clear_error(tmp_path: Path) -> None:
    _setup(tmp_path)
    with slack_api(token="xoxb-right") as slack:
        env = environment(tmp_path, KPIWATCH_SLACK_TOKEN="xoxb-wrong",
                          KPIWATCH_SLACK_API_URL=slack.base_url)  # fmt: skip
        result = kpiwatch(tmp_path, "run", "--once", env=env)
    assert result.returncode == 2
    assert "Slack" in result.stderr
    assert "KPIWATCH_SLACK_TOKEN" in result.stderr
    assert "xoxb-wrong" not in result.stderr


def test_digest_prints_and_sends_the_on_call_digest(tmp_path: Path) -> None:
    _setup(tmp_path)
    assert kpiwatch(tmp_path, "push", "nps", "25").returncode == 0
    printed = kpiwatch(tmp_path, "digest", "oncall")
    assert printed.returncode == 0, printed.stderr
    assert "Subject: [kpiwatch] on-call digest" in printed.stdout
    assert "Net Promoter Score" in printed.stdout
    assert kpiwatch(tmp_path, "digest", "oncall", "--send").returncode == 2  # no SMTP
    with running_smtp() as smtp:
        env = environment(tmp_path, KPIWATCH_SMTP_HOST=smtp.host, KPIWATCH_SMTP_PORT=str(smtp.port),
                          KPIWATCH_SMTP_STARTTLS="false",
                          KPIWATCH_ONCALL_EMAILS="oncall@example.com")  # fmt: skip
        sent = kpiwatch(tmp_path, "digest", "oncall", "--send", env=env)
        assert sent.returncode == 0, sent.stderr
        assert [m["To"] for m in smtp.messages] == ["oncall@example.com"]
        assert "1 red" in str(smtp.messages[0]["Subject"])


def test_outbox_lists_dead_notifications_and_retries_them(tmp_path: Path) -> None:
    _setup(tmp_path)
    assert kpiwatch(tmp_path, "push", "nps", "25").returncode == 0  # red: webhook + log
    rows = json.loads(kpiwatch(tmp_path, "outbox", "list", "--json").stdout)
    webhook = next(r for r in rows if r["channel"] == "webhook")
    assert webhook["state"] == "pending"
    assert kpiwatch(tmp_path, "outbox", "retry").returncode == 2  # nothing named
    retried = kpiwatch(tmp_path, "outbox", "retry", "--all-dead")
    assert retried.returncode == 0
    assert "0 notification(s) queued again" in retried.stdout
