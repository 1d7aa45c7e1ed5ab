"""The Alertmanager channel against Debian's real prometheus-alertmanager.

The daemon's wiring (App) runs in-process on SQLite with a clock we set; the
clock follows the real one, since Alertmanager judges startsAt/endsAt by its
own. Every outcome is asserted where Alertmanager reports it: its API v2, amtool,
and the notifications it sends its webhook receiver. Without the binary the
tests skip, or fail when ``CI`` is set.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from alertmanager_server import running_alertmanager
from local_http import LocalServer, QuietHandler, serving
from processes import require_tool
from prometheus_server import free_port

from kpiwatch.config.settings import Settings
from kpiwatch.errors import DeliveryError
from kpiwatch.model import MatcherKind, Status
from kpiwatch.notify.channels.alertmanager import AlertmanagerChannel
from kpiwatch.pushes import record_push
from kpiwatch.runtime.app import App
from kpiwatch.testing import FixedClock

RULES = """
teams:
  growth: {alertmanager: default}
kpis:
  - {id: churn, name: Churn, owner: dana@example.com, team: growth, unit: "%",
     direction: lower_is_better, source: push, every: 1h,
     thresholds: {yellow: 4.5, red: 5.5}}
  - {id: signups, name: Signups, owner: ava@example.com, direction: higher_is_better,
     source: push, every: 1h, thresholds: {red: 10}, notify: {alertmanager: default}}
  - {id: stock, name: Stock, owner: ops@example.com, team: growth, direction: higher_is_better,
     source: push, every: 1h, thresholds: {red: 10}, max_age: 2s}
"""
BASE_URL = "https://kpis.example.com"
WAIT = 15.0  # seconds: Alertmanager notifies within group_interval (1 s) of a change


class Receiver(LocalServer):
    """Alertmanager's webhook receiver: keeps every notification it is sent."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.received.append(json.loads(body))
                self.reply(200, b"{}")

        super().__init__(Handler)

    def alerts(self) -> list[dict[str, Any]]:
        with self.lock:
            return [a for n in self.received for a in n["alerts"]]


@dataclass
class Deployment:
    app: App
    clock: FixedClock
    url: str
    receiver: Receiver

    def tick(self) -> datetime:
        """Move our clock on to the real time's next whole second and return it.

        Never ahead of the real time: Alertmanager takes a resolve stamped in its
        future for an alert still firing (and keeps the longer lease)."""
        deadline = time.monotonic() + 2
        now = datetime.now(UTC).replace(microsecond=0)
        while now <= self.clock.now() and time.monotonic() < deadline:
            time.sleep(0.05)
            now = datetime.now(UTC).replace(microsecond=0)
        assert now > self.clock.now(), "the real clock stands still"
        self.clock.set(now)
        return now

    def push(self, kpi_id: str, value: float) -> None:
        """Push a value, evaluate it and deliver what it caused."""
        now = self.tick()
        kpi = self.app.kpi(kpi_id)
        assert kpi is not None
        record_push(self.app.runner, self.app.store, kpi, value, now, now)
        self.app.outbox.deliver_due()

    def sent(self) -> float | None:
        """kpiwatch_notifications_total{channel="alertmanager", result="sent"}"""
        labels = {"channel": "alertmanager", "result": "sent"}
        return self.app.registry.get_sample_value("kpiwatch_notifications_total", labels)

    def alerts(self, **params: str) -> list[dict[str, Any]]:
        response = requests.get(f"{self.url}/api/v2/alerts", params=params, timeout=5)
        response.raise_for_status()
        found: list[dict[str, Any]] = response.json()
        return found

    def alert(self, kpi_id: str) -> dict[str, Any]:
        [found] = [a for a in self.alerts() if a["labels"].get("kpi") == kpi_id]
        return found


@pytest.fixture
def deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployment]:
    monkeypatch.chdir(tmp_path)  # no config/kpiwatch.toml or .env here
    for name in [n for n in os.environ if n.startswith("KPIWATCH_")]:
        monkeypatch.delenv(name)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "kpis.yaml").write_text(RULES)
    with serving(Receiver()) as receiver, running_alertmanager(
        tmp_path, webhook_url=f"{receiver.base_url}/alerts"
    ) as url:
        settings = Settings(
            database_url=f"sqlite:///{tmp_path}/state.db", rules_dir=tmp_path / "rules",
            public_url=BASE_URL, alertmanager_url=url,
        )  # fmt: skip
        clock = FixedClock(datetime.now(UTC).replace(microsecond=0))
        app = App(settings, clock)
        try:
            yield Deployment(app, clock, url, receiver)
        finally:
            app.close()


def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {WAIT:g}s: {what}")
        time.sleep(0.2)


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_red_kpi_fires_is_refreshed_and_resolves_on_recovery(deployment: Deployment) -> None:
    d = deployment
    d.push("churn", 3.0)  # green from the start: no transition, no alert
    assert (d.sent(), d.alerts()) == (0, [])
    d.push("churn", 5.8)
    assert d.sent() == 1
    went_red = d.clock.now()

    firing = d.alert("churn")
    assert firing["labels"] == {"alertname": "KpiStatus", "kpi": "churn",
                                "owner": "dana@example.com", "team": "growth",
                                "severity": "red"}  # fmt: skip
    assert firing["annotations"] == {
        "summary": "Churn is red: 5.8 %",
        "reasons": "value 5.8 % > red 5.5 %",
        "url": f"{BASE_URL}/kpis/churn",
    }
    assert firing["generatorURL"] == f"{BASE_URL}/kpis/churn"
    assert firing["status"]["state"] == "active"
    assert _at(firing["startsAt"]) == went_red  # the episode's start
    assert _at(firing["endsAt"]) == went_red + timedelta(minutes=4)  # 4 refreshes of 60 s

    amtool = require_tool("amtool", "apt-get install prometheus-alertmanager")
    shown = subprocess.run(
        [amtool, "alert", "query", f"--alertmanager.url={d.url}", "-o", "json", "kpi=churn"],
        capture_output=True, text=True, timeout=20, check=True,
    )  # fmt: skip
    [queried] = json.loads(shown.stdout)
    assert queried["labels"]["severity"] == "red"
    assert queried["fingerprint"] == firing["fingerprint"]

    _until(lambda: any(a["status"] == "firing" for a in d.receiver.alerts()),
           "Alertmanager notifies its receiver of the firing alert")  # fmt: skip

    # the refresh job (one replica per 60 s slot) extends the lease of a still-red KPI
    refreshed_at = d.tick()
    d.app._refresh_alerts()
    again = d.alert("churn")
    assert again["fingerprint"] == firing["fingerprint"]  # the same alert, not a new one
    assert _at(again["startsAt"]) == went_red
    assert _at(again["endsAt"]) == refreshed_at + timedelta(minutes=4)
    assert _at(again["endsAt"]) > _at(firing["endsAt"])
    # a second run of the job in the same slot (another replica's, say) posts nothing
    later = d.tick()
    d.app._refresh_alerts()
    same_slot = refreshed_at.timestamp() // 60 == later.timestamp() // 60
    last = refreshed_at if same_slot else later
    assert _at(d.alert("churn")["endsAt"]) == last + timedelta(minutes=4)

    d.push("churn", 3.1)  # recovered
    assert d.sent() == 2
    recovered = d.clock.now()
    # Alertmanager 0.25 leaves a resolved alert out of GET /api/v2/alerts (whatever the
    # filters) and tells its receivers it resolved
    _until(lambda: d.alerts() == [],
           "the resolved alert leaves Alertmanager's API")  # fmt: skip
    _until(lambda: any(a["status"] == "resolved" for a in d.receiver.alerts()),
           "Alertmanager notifies its receiver that the alert resolved")  # fmt: skip
    [resolved] = [a for a in d.receiver.alerts() if a["status"] == "resolved"]
    assert resolved["labels"]["kpi"] == "churn"
    assert resolved["labels"]["severity"] == "red"
    assert _at(resolved["startsAt"]) == went_red
    assert _at(resolved["endsAt"]) == recovered


def test_a_blind_red_kpi_keeps_its_alert_firing(deployment: Deployment) -> None:
    """A data problem is not a verdict (SPEC §5a): the refresh keeps the episode's alert."""
    d = deployment
    d.push("stock", 3.0)
    went_red = d.clock.now()
    firing = d.alert("stock")
    time.sleep(3.2)  # past max_age (whole seconds on our clock): stale, the KPI blind
    d.tick()
    d.app.runner.evaluate_kpi("stock")
    state = d.app.store.get_state("stock")
    assert state is not None
    assert (state.status, state.verdict) == (Status.UNKNOWN, Status.RED)
    refreshed_at = d.tick()
    d.app._refresh_alerts()
    still = d.alert("stock")
    assert still["fingerprint"] == firing["fingerprint"]
    assert still["labels"]["severity"] == "red"
    assert _at(still["startsAt"]) == went_red
    assert _at(still["endsAt"]) == refreshed_at + timedelta(minutes=4)
    assert still["annotations"]["reasons"].startswith("stale: last value")


def test_red_to_yellow_swaps_the_alert_and_a_silenced_kpi_is_not_refreshed(
    deployment: Deployment,
) -> None:
    d = deployment
    d.push("churn", 6.0)
    assert d.alert("churn")["labels"]["severity"] == "red"
    d.push("churn", 5.0)  # yellow now
    _until(lambda: [a["labels"]["severity"] for a in d.alerts()] == ["yellow"],
           "only the yellow alert is left")  # fmt: skip

    d.push("signups", 3)
    signups = d.alert("signups")
    assert signups["labels"] == {"alertname": "KpiStatus", "kpi": "signups",
                                 "owner": "ava@example.com", "severity": "red"}  # fmt: skip

    # silenced in kpiwatch: no longer refreshed, so its alert ends with its lease
    now = d.tick()
    d.app.store.add_silence(MatcherKind.KPI, "signups", now, now + timedelta(hours=1),
                            "ava@example.com", "known: the form is down", now)  # fmt: skip
    yellow = d.alert("churn")
    assert d.app.refresh_alerts() == 1
    assert _at(d.alert("churn")["endsAt"]) == now + timedelta(minutes=4)
    assert _at(d.alert("churn")["endsAt"]) > _at(yellow["endsAt"])
    assert d.alert("signups")["endsAt"] == signups["endsAt"]


def test_alertmanager_refusing_is_permanent_and_unreachable_is_retryable(
    deployment: Deployment,
) -> None:
    channel = AlertmanagerChannel(deployment.url)
    with pytest.raises(DeliveryError) as refused:
        channel.post([{"labels": {}}])
    assert not refused.value.retryable
    assert "HTTP 400" in str(refused.value)
    assert "at least one label pair required" in str(refused.value)

    closed = AlertmanagerChannel(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(DeliveryError) as unreachable:
        closed.post([{"labels": {"alertname": "KpiStatus"}}])
    assert unreachable.value.retryable
    assert unreachable.value.channel == "alertmanager"


def test_a_kpi_removed_from_the_rules_while_red_has_its_alert_resolved(
    deployment: Deployment, tmp_path: Path
) -> None:
    d = deployment
    d.push("churn", 6.0)
    d.push("signups", 3)
    assert sorted(a["labels"]["kpi"] for a in d.alerts()) == ["churn", "signups"]

    d.tick()
    without_churn = RULES[: RULES.index("  - {id: churn")] + RULES[RULES.index("  - {id: signups"):]
    (tmp_path / "rules" / "kpis.yaml").write_text(without_churn)
    assert d.app.reload()
    d.app.outbox.deliver_due()
    assert d.sent() == 3
    _until(lambda: [a["labels"]["kpi"] for a in d.alerts()] == ["signups"],
           "the removed KPI's alert is resolved; the other one still fires")  # fmt: skip
    _until(lambda: any(a["status"] == "resolved" for a in d.receiver.alerts()),
           "Alertmanager notifies its receiver that the alert resolved")  # fmt: skip
    [resolved] = [a for a in d.receiver.alerts() if a["status"] == "resolved"]
    assert resolved["labels"] == {"alertname": "KpiStatus", "kpi": "churn", "team": "growth",
                                  "owner": "dana@example.com", "severity": "red"}  # fmt: skip
    assert resolved["annotations"]["summary"] == "Churn was removed from the rules"
