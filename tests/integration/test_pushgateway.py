"""push_metrics against a real Prometheus Pushgateway (Debian's prometheus-pushgateway).

Without the binary the tests skip, or fail when ``CI`` is set. Each Pushgateway
runs on a free port of 127.0.0.1 without persistence and is always stopped.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from prometheus_server import free_port
from pushgateway_server import PASSWORD, USER, running_pushgateway
from structlog.testing import capture_logs

from kpiwatch.config.loader import load_rule_text
from kpiwatch.config.rules import RuleSet
from kpiwatch.errors import ConfigError, DeliveryError
from kpiwatch.model import KpiState, ReviewCadence, Status
from kpiwatch.store.repository import Store
from kpiwatch.testing import FixedClock
from kpiwatch.web.exporter import Metrics, build_registry
from kpiwatch.web.pushgateway import push_metrics

NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
PASSWORD_IN_URL = "s3cr3t%3Ap%40ss"  # percent-encoded, as a URL must carry it
KPI = """
  - id: {id}
    name: {id}
    owner: ava@example.com
    team: growth
    direction: higher_is_better
    source: wh
    query: SELECT 1
    thresholds: {{yellow: 100, red: 80}}
"""
HEADER = 'sources:\n  wh: {type: sql, url: "sqlite://"}\nteams:\n  growth: {}\nkpis:'


def _rules(*kpi_ids: str) -> RuleSet:
    return load_rule_text(HEADER + "".join(KPI.format(id=k) for k in kpi_ids), "r.yaml").rules


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[str]:
    with running_pushgateway(tmp_path) as url:
        yield url


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(f"sqlite:///{tmp_path}/state.db") as opened:
        for kpi_id, value in (("mrr", 120.0), ("churn", 70.0)):
            opened.save_state(
                KpiState(kpi_id, Status.GREEN if value > 100 else Status.RED, NOW,
                         ReviewCadence.MONTHLY, value=value, last_evaluated=NOW)
            )  # fmt: skip
        yield opened


def _registry(store: Store, rules: list[RuleSet]) -> CollectorRegistry:
    metrics = Metrics(["email"])
    return build_registry(store, lambda: rules[0], metrics, clock=FixedClock(NOW))


def _pushed(url: str, auth: tuple[str, str] | None = None) -> dict[str, list[dict[str, str]]]:
    """family -> label sets of its samples, as the Pushgateway serves them."""
    response = requests.get(f"{url}/metrics", auth=auth, timeout=5)
    response.raise_for_status()
    return {
        family.name: [{**s.labels, "__value__": str(s.value)} for s in family.samples]
        for family in text_string_to_metric_families(response.text)
    }


def _kpis(found: dict[str, list[dict[str, str]]], family: str) -> dict[str, dict[str, str]]:
    return {sample["kpi"]: sample for sample in found.get(family, [])}


def test_push_replaces_the_group_so_removed_kpis_disappear(pushgateway: str, store: Store) -> None:
    rules = [_rules("mrr", "churn")]
    registry = _registry(store, rules)
    push_metrics(pushgateway, registry, instance="kpiwatch-1:10470", timeout=5)
    found = _pushed(pushgateway)
    values = _kpis(found, "kpiwatch_kpi_value")
    assert values.keys() == {"mrr", "churn"}
    assert values["mrr"]["job"] == "kpiwatch"
    assert values["mrr"]["instance"] == "kpiwatch-1:10470"
    assert values["mrr"]["team"] == "growth"
    assert float(values["mrr"]["__value__"]) == 120.0
    status = [s for s in found["kpiwatch_kpi_status"] if s["kpi"] == "churn"]
    assert {s["status"]: float(s["__value__"]) for s in status}["red"] == 1.0
    dead = [s for s in found["kpiwatch_notifications"] if s["result"] == "dead"]
    assert [(s["channel"], float(s["__value__"])) for s in dead] == [("email", 0.0)]

    rules[0] = _rules("mrr")  # a reload dropped churn
    push_metrics(pushgateway, registry, instance="kpiwatch-1:10470", timeout=5)
    found = _pushed(pushgateway)
    assert _kpis(found, "kpiwatch_kpi_value").keys() == {"mrr"}
    assert "churn" not in _kpis(found, "kpiwatch_kpi_status")
    assert "churn" not in _kpis(found, "kpiwatch_kpi_info")


def test_pushing_to_a_closed_port_raises_a_clear_error(store: Store) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(DeliveryError) as caught:
        push_metrics(url, _registry(store, [_rules("mrr")]), instance="i", timeout=2)
    assert url in str(caught.value)
    assert "refused" in str(caught.value).lower()
    assert caught.value.channel == "pushgateway"
    assert caught.value.retryable


def test_basic_auth_from_the_url_is_sent_and_never_shown(tmp_path: Path, store: Store) -> None:
    registry = _registry(store, [_rules("mrr")])
    with running_pushgateway(tmp_path, basic_auth=True) as url:
        host = url.removeprefix("http://")
        with capture_logs() as logs:
            push_metrics(f"http://{USER}:{PASSWORD_IN_URL}@{host}", registry, instance="a")
        assert "mrr" in _kpis(_pushed(url, (USER, PASSWORD)), "kpiwatch_kpi_value")
        assert PASSWORD_IN_URL not in repr(logs)
        assert PASSWORD not in repr(logs)

        with pytest.raises(DeliveryError) as caught:
            push_metrics(f"http://{USER}:wrong-pw@{host}", registry, instance="a")
        assert "401" in str(caught.value)
        assert "wrong-pw" not in str(caught.value)
        assert f"http://{USER}:***@{host}" in str(caught.value)
        assert not caught.value.retryable  # a bad password does not fix itself

        with pytest.raises(DeliveryError, match="401"):
            push_metrics(url, registry, instance="a")  # no credentials at all


@pytest.mark.parametrize("url", ["http://host:port", "ftp://gateway:9091", "http://"])
def test_an_unusable_url_is_a_config_error(url: str, store: Store) -> None:
    with pytest.raises(ConfigError, match="pushgateway: invalid URL"):
        push_metrics(url, _registry(store, [_rules("mrr")]), instance="i")
