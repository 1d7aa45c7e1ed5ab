"""The files in deploy/ are valid: alert rules, systemd unit, compose, Docker, Kubernetes, Grafana.

promtool and systemd-analyze are used where present: a missing one skips its test, or fails it
when ``CI`` is set. ``docker compose config`` runs only where the compose plugin is installed
(optional everywhere: the structural compose test covers the file without it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from processes import require_tool

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ALERTS = DEPLOY / "prometheus" / "kpiwatch-alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "kpiwatch-alerts.test.yml"
UNIT = DEPLOY / "systemd" / "kpiwatch.service"
COMPOSE = DEPLOY / "compose" / "docker-compose.yml"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
DASHBOARD = DEPLOY / "grafana" / "kpiwatch-dashboard.json"
KUBERNETES = DEPLOY / "kubernetes"

# The metric names kpiwatch exports (SPEC), plus Prometheus's own `up`.
KNOWN_METRICS = frozenset(
    {
        "kpiwatch_kpi_value",
        "kpiwatch_kpi_target",
        "kpiwatch_kpi_threshold",
        "kpiwatch_kpi_status",
        "kpiwatch_kpi_escalated",
        "kpiwatch_kpi_blind",
        "kpiwatch_kpi_review_interval_seconds",
        "kpiwatch_kpi_last_evaluation_timestamp_seconds",
        "kpiwatch_kpi_info",
        "kpiwatch_source_up",
        "kpiwatch_source_incident",
        "kpiwatch_source_query_duration_seconds",
        "kpiwatch_evaluations_total",
        "kpiwatch_notifications_total",
        "kpiwatch_outbox_pending",
        "kpiwatch_build_info",
        "up",
    }
)

# PromQL words that are not metric names: functions, aggregations, operators, modifiers.
PROMQL_WORDS = frozenset(
    {
        "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk",
        "quantile", "count_values", "group", "by", "without", "on", "ignoring",
        "group_left", "group_right", "and", "or", "unless", "bool", "offset", "time",
        "rate", "irate", "increase", "delta", "idelta", "deriv", "changes", "resets",
        "abs", "ceil", "floor", "round", "clamp_min", "clamp_max", "vector", "scalar",
        "label_replace", "label_join", "absent", "absent_over_time", "histogram_quantile",
        "max_over_time", "min_over_time", "avg_over_time", "sum_over_time",
        "count_over_time", "last_over_time", "timestamp", "sort", "sort_desc", "inf", "nan",
        "label_values",
    }
)  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (label matchers, strings, ranges removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\$\w+", "", text)  # Grafana variables
    names = set(re.findall(r"(?<![\w.])[a-zA-Z_:][\w:]*", text))
    return {n for n in names if n.lower() not in PROMQL_WORDS and not re.fullmatch(r"\d+\w*", n)}


def test_metric_names_helper() -> None:
    expr = (
        'sum by (kpi) (rate(kpiwatch_evaluations_total{result="ok", kpi=~"$kpi"}[5m]))'
        " / on (kpi) group_left (team) kpiwatch_kpi_info > 3 * 3600 or bogus_metric"
    )
    assert metric_names(expr) == {
        "kpiwatch_evaluations_total",
        "kpiwatch_kpi_info",
        "bogus_metric",
    }


# --- Prometheus alert rules --------------------------------------------------


def _alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_promtool_check_rules() -> None:
    promtool = require_tool("promtool")
    result = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules() -> None:
    promtool = require_tool("promtool")
    result = subprocess.run(
        [promtool, "test", "rules", ALERT_TESTS.name],
        cwd=ALERT_TESTS.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_are_complete_and_use_known_metrics() -> None:
    rules = _alert_rules()
    assert {rule["alert"] for rule in rules} == {
        "KpiwatchDown",
        "KpiwatchEvaluationsStale",
        "KpiwatchNotificationsDead",
        "KpiwatchSourceIncident",
        "KpiwatchKpiBlindLong",
        "KpiwatchOutboxBacklog",
    }
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"].keys() >= {"summary", "description"}, rule["alert"]
        unknown = metric_names(rule["expr"]) - KNOWN_METRICS
        assert not unknown, f"{rule['alert']}: unknown metrics {unknown}"


def test_data_problem_alerts_watch_incidents_and_long_blind_kpis() -> None:
    rules = {rule["alert"]: rule for rule in _alert_rules()}
    incident, blind = rules["KpiwatchSourceIncident"], rules["KpiwatchKpiBlindLong"]
    assert incident["expr"].strip() == "kpiwatch_source_incident == 1"
    assert (incident["for"], incident["labels"]["severity"]) == ("5m", "warning")
    assert "{{ $labels.source }}" in incident["annotations"]["summary"]
    assert blind["expr"].strip() == "kpiwatch_kpi_blind == 1"
    assert (blind["for"], blind["labels"]["severity"]) == ("1d", "warning")
    assert "{{ $labels.kpi }}" in blind["annotations"]["summary"]
    # the same outage once: source_up is 0 exactly while an incident is open
    assert not any(metric_names(rule["expr"]) & {"kpiwatch_source_up"} for rule in rules.values())


def test_alert_rules_name_only_metrics_the_exporter_exports() -> None:
    from kpiwatch.web.exporter import FAMILIES

    exported = set(FAMILIES) | {"up"}
    assert exported >= KNOWN_METRICS
    for rule in _alert_rules():
        assert metric_names(rule["expr"]) <= exported, rule["alert"]


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    for rule in _alert_rules():
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case["exp_alerts"] for case in mine), f"{rule['alert']} never fires"
        assert any(not case["exp_alerts"] for case in mine), f"{rule['alert']} never quiet"


# --- systemd -----------------------------------------------------------------


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    """systemd-analyze reports unknown or invalid directives only as warnings: any is a failure.

    The unit is copied with ExecStart on an existing binary, since kpiwatch is not installed
    at /usr/bin here; everything else is verified as shipped.
    """
    analyze = require_tool("systemd-analyze")
    unit = tmp_path / "kpiwatch.service"
    text = UNIT.read_text()
    assert "\nExecStart=/usr/bin/kpiwatch run\n" in text
    true = shutil.which("true") or "/bin/true"
    unit.write_text(text.replace("ExecStart=/usr/bin/kpiwatch run", f"ExecStart={true} run"))
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"},
    )
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0 and "Failed to" in output and "bus" in output.lower():
        pytest.skip(f"systemd-analyze cannot run here: {output}")
    assert result.returncode == 0, output
    assert output == "", output  # "Unknown key …", "Failed to parse …" come out here


def test_systemd_verify_catches_unknown_directives(tmp_path: Path) -> None:
    """The test above is meaningful: a bad directive produces output."""
    analyze = require_tool("systemd-analyze")
    unit = tmp_path / "bad.service"
    unit.write_text("[Service]\nExecStart=/bin/true\nNoSuchDirective=yes\n")
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, check=False
    )
    assert "NoSuchDirective" in result.stdout + result.stderr


def _unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_systemd_unit_settings() -> None:
    settings = _unit_settings()
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "WatchdogSec": "30",
        "DynamicUser": "yes",
        "StateDirectory": "kpiwatch",
        "ConfigurationDirectory": "kpiwatch",
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "MemoryDenyWriteExecute": "yes",
        "CapabilityBoundingSet": "",
        "UMask": "0077",
    }
    for key, value in expected.items():
        assert settings.get(key) == [value], key
    assert settings["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert settings["EnvironmentFile"] == ["-/etc/kpiwatch/kpiwatch.env"]


# --- Docker and compose --------------------------------------------------------


def test_dockerfile() -> None:
    text = DOCKERFILE.read_text()
    instructions = [
        line.split(None, 1) for line in text.splitlines() if line and not line[0].isspace()
    ]
    keywords = [parts[0] for parts in instructions if not parts[0].startswith("#")]
    assert keywords.count("FROM") >= 2, "multi-stage"
    assert "HEALTHCHECK" in keywords
    assert "/healthz" in text
    users = [parts[1].strip() for parts in instructions if parts[0] == "USER"]
    assert users, "no USER"
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert 'ENTRYPOINT ["kpiwatch"]' in text
    assert 'CMD ["run"]' in text
    assert "STOPSIGNAL SIGTERM" in text
    ignore = DOCKERFILE.with_name("Dockerfile.dockerignore").read_text().splitlines()
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", text, flags=re.MULTILINE)
    for source in " ".join(copied).split():
        assert (ROOT / source).exists(), source
        assert f"!{source}" in ignore or f"!{source}/" in ignore, f"{source} is ignored"


def _compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def test_compose_structure() -> None:
    compose = _compose()
    services = compose["services"]
    assert services.keys() >= {"kpiwatch", "postgres", "prometheus", "grafana", "mailpit"}
    for name, service in services.items():
        if name != "demo-warehouse":  # a one-shot job
            assert "test" in service.get("healthcheck", {}), f"{name} has no healthcheck"
    kpiwatch = services["kpiwatch"]
    environment = kpiwatch["environment"]
    assert environment["KPIWATCH_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert environment["KPIWATCH_SMTP_HOST"] == "mailpit"
    assert kpiwatch["build"]["dockerfile"] == "deploy/docker/Dockerfile"
    assert (COMPOSE.parent / kpiwatch["build"]["context"]).resolve() == ROOT
    named = set(compose.get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), f"{name}: {source} missing"
            else:
                assert source in named, f"{name}: volume {source} not declared"
    env_example = (COMPOSE.parent / ".env.example").read_text()
    for variable in ("KPIWATCH_API_TOKEN", "POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD"):
        assert f"\n{variable}=" in env_example, variable


def _compose_command() -> list[str]:
    """``docker compose`` (the plugin) or Debian's ``docker-compose``: both check a file
    without an engine. Skips without either, fails when ``CI`` is set."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    return [require_tool("docker-compose")]


def test_compose_config_validates(tmp_path: Path) -> None:
    """The compose tool's own validation, with the example .env as users copy it."""
    workdir = tmp_path / "compose"
    shutil.copytree(COMPOSE.parent, workdir)
    shutil.copy(workdir / ".env.example", workdir / ".env")
    result = subprocess.run(
        [*_compose_command(), "-f", str(workdir / COMPOSE.name), "config"],
        capture_output=True,
        text=True,
        check=False,
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert {"kpiwatch", "postgres", "prometheus", "grafana"} <= set(resolved["services"])
    assert "change-me" in str(resolved["services"]["kpiwatch"]["environment"])


def test_prometheus_config_for_compose() -> None:
    promtool = require_tool("promtool")
    config = yaml.safe_load((COMPOSE.parent / "prometheus.yml").read_text())
    targets = [
        target
        for job in config["scrape_configs"]
        if job["job_name"] == "kpiwatch"
        for static in job["static_configs"]
        for target in static["targets"]
    ]
    assert targets == ["kpiwatch:10470"]
    result = subprocess.run(
        [promtool, "check", "config", "--syntax-only", str(COMPOSE.parent / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_provisioning() -> None:
    provisioning = COMPOSE.parent / "grafana" / "provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"
    dashboards = yaml.safe_load((provisioning / "dashboards" / "kpiwatch.yml").read_text())
    path = dashboards["providers"][0]["options"]["path"]
    grafana = _compose()["services"]["grafana"]
    mounts = dict(volume.rsplit(":", 2)[:2] for volume in grafana["volumes"] if ":ro" in volume)
    (source,) = [source for source, target in mounts.items() if target == path]
    assert (COMPOSE.parent / source).resolve() == DASHBOARD.parent


# --- Grafana -----------------------------------------------------------------


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def test_grafana_dashboard() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 36
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert "label_values" in variables["team"]["definition"]
    assert "label_values" in variables["kpi"]["definition"]
    panels = [panel for panel in _panels(dashboard["panels"]) if panel["type"] != "row"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    types = {panel["type"] for panel in panels}
    assert {"timeseries", "state-timeline", "table"} <= types
    selected: set[str] = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names, f"{panel['title']}: no metric in {target['expr']}"
            assert names <= KNOWN_METRICS, f"{panel['title']}: unknown {names - KNOWN_METRICS}"
            selected |= names
    for variable in ("team", "kpi"):
        match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", variables[variable]["definition"])
        assert match, variables[variable]["definition"]
        assert metric_names(match[1]) == {"kpiwatch_kpi_info"}
        assert match[2] == variable
    assert selected >= KNOWN_METRICS - {
        "kpiwatch_kpi_review_interval_seconds",
        "kpiwatch_kpi_last_evaluation_timestamp_seconds",
        "kpiwatch_kpi_info",
    }


# --- Kubernetes --------------------------------------------------------------


def _kubernetes_documents() -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        documents.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return documents


def test_kubernetes_manifests() -> None:
    documents = _kubernetes_documents()
    kinds = {doc["kind"] for doc in documents}
    assert kinds >= {"Deployment", "Service", "ConfigMap", "Secret", "Kustomization"}
    kustomization = next(doc for doc in documents if doc["kind"] == "Kustomization")
    for resource in kustomization["resources"]:
        assert (KUBERNETES / resource).is_file(), resource

    deployment = next(doc for doc in documents if doc["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 1  # SQLite: one writer
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "limits" in container["resources"]
    mounts = {mount["name"]: mount for mount in container["volumeMounts"]}
    assert "subPath" not in mounts["rules"], "subPath mounts never see ConfigMap updates"
    assert mounts["state"]["mountPath"] == "/var/lib/kpiwatch"


def _json_patch(document: dict[str, Any], operations: list[dict[str, Any]]) -> None:
    """RFC 6902 ``replace`` operations, as kustomize applies them (the overlay uses no other)."""
    for operation in operations:
        assert operation["op"] == "replace", operation
        *parents, last = operation["path"].strip("/").split("/")
        node: Any = document
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        key: Any = int(last) if isinstance(node, list) else last
        assert key in node if isinstance(node, dict) else key < len(node), operation["path"]
        node[key] = operation["value"]


def test_kubernetes_replicas_overlay_shares_work_on_postgres() -> None:
    overlay = yaml.safe_load((DEPLOY / "kubernetes-replicas" / "kustomization.yaml").read_text())
    assert overlay["resources"] == ["../kubernetes"]
    deployment = next(doc for doc in _kubernetes_documents() if doc["kind"] == "Deployment")
    (deployment_patch, claim_patch) = overlay["patches"]
    assert deployment_patch["target"] == {"kind": "Deployment", "name": "kpiwatch"}
    _json_patch(deployment, yaml.safe_load(deployment_patch["patch"]))
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    pod = deployment["spec"]["template"]["spec"]
    env = {item["name"]: item for item in pod["containers"][0]["env"]}
    assert env["KPIWATCH_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "kpiwatch"
    assert "value" not in env["KPIWATCH_DATABASE_URL"]  # no SQLite default left behind
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert "emptyDir" in volumes["state"]
    assert "persistentVolumeClaim" not in volumes["state"]
    claim = yaml.safe_load(claim_patch["patch"])
    assert claim["$patch"] == "delete"
    assert any(doc["kind"] == "PersistentVolumeClaim" and doc["metadata"]["name"]
               == claim["metadata"]["name"] for doc in _kubernetes_documents())  # fmt: skip


def test_kubernetes_replicas_overlay_builds_with_kubectl() -> None:
    """Where kubectl is installed, kustomize really builds the overlay (optional tool)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (optional: the overlay is checked structurally)")
    result = subprocess.run([kubectl, "kustomize", str(DEPLOY / "kubernetes-replicas")],
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    documents = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert "PersistentVolumeClaim" not in {doc["kind"] for doc in documents}
    (deployment,) = [doc for doc in documents if doc["kind"] == "Deployment"]
    assert deployment["spec"]["replicas"] == 3


def test_kubernetes_rules_are_valid(tmp_path: Path) -> None:
    """The ConfigMap's rule files pass ``kpiwatch check --strict``."""
    from click.testing import CliRunner

    from kpiwatch.cli import main

    configmap = next(doc for doc in _kubernetes_documents() if doc["kind"] == "ConfigMap")
    for name, content in configmap["data"].items():
        (tmp_path / name).write_text(content)
    result = CliRunner().invoke(
        main,
        ["--rules-dir", str(tmp_path), "check", "--strict"],
        env={"WAREHOUSE_URL": "sqlite:///warehouse.db"},
    )
    assert result.exit_code == 0, result.output
