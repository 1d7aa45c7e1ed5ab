"""Alertmanager alerts: labels, annotations, startsAt/endsAt, resolves; routing and rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kpiwatch.config.loader import load_rule_text
from kpiwatch.config.rules import Kpi
from kpiwatch.errors import RuleLoadError
from kpiwatch.model import (
    Delivery,
    DeliveryState,
    Event,
    EventKind,
    KpiState,
    OutboxMessage,
    ReviewCadence,
    Status,
)
from kpiwatch.notify.channels.alertmanager import removal, state_alert, transition_alerts
from kpiwatch.notify.notice import Notice
from kpiwatch.notify.routing import Router

AT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
NOW = AT + timedelta(seconds=30)  # delivered half a minute after the evaluation
LEASE = timedelta(minutes=4)
URL = "https://kpis.example.com/kpis/churn"
RULES = """
sources:
  wh: {type: sql, url: "sqlite://"}
teams:
  cs: {slack: "#cs", alertmanager: default}
  ops: {slack: "#ops"}
kpis:
  - {id: churn, name: Churn, owner: dana@example.com, team: ops, unit: "%",
     direction: lower_is_better, source: wh, query: "SELECT 1",
     notify: {alertmanager: default}}
  - {id: teamed, name: Teamed, owner: lee@example.com, team: cs, direction: lower_is_better,
     source: wh, query: "SELECT 1"}
  - {id: quiet, name: Quiet, owner: kim@example.com, team: ops, direction: lower_is_better,
     source: wh, query: "SELECT 1"}
"""


def _kpi(team: str | None = "ops") -> Kpi:
    return Kpi.model_validate({
        "id": "churn", "name": "Churn", "owner": "dana@example.com", "team": team,
        "direction": "lower_is_better", "source": "wh", "query": "SELECT 1", "unit": "%",
    })  # fmt: skip


def _notice(was: str | None, to: str, *, team: str | None = "ops",
            state: KpiState | None = None) -> Notice:  # fmt: skip
    event = Event(EventKind.STATUS_CHANGED, f"churn:{to}", AT, kpi_id="churn", data={
        "from": was, "to": to, "value": 5.8, "unit": "%",
        "reasons": ["5.8 % is above the red threshold 5 %", "worse 3 times in a row"],
    })  # fmt: skip
    message = OutboxMessage(1, event, "alertmanager", "default", DeliveryState.PENDING, 0, AT, AT)
    return Notice(message, _kpi(team), None, state, (), (), None, URL)


def test_a_kpi_going_red_fires_an_alert_with_its_labels_annotations_and_lease() -> None:
    [alert] = transition_alerts(_notice("green", "red"), NOW, LEASE)
    assert alert == {
        "labels": {
            "alertname": "KpiStatus",
            "kpi": "churn",
            "owner": "dana@example.com",
            "team": "ops",
            "severity": "red",
        },
        "annotations": {
            "summary": "Churn is red: 5.8 %",
            "reasons": "5.8 % is above the red threshold 5 %; worse 3 times in a row",
            "url": URL,
        },
        "startsAt": "2026-03-02T09:00:00Z",  # the episode began at the transition
        "endsAt": "2026-03-02T09:04:30Z",  # delivered at NOW, leased for four minutes
        "generatorURL": URL,
    }


def test_recovery_resolves_the_same_labels_now() -> None:
    [alert] = transition_alerts(_notice("yellow", "green"), NOW, LEASE)
    assert alert["labels"]["severity"] == "yellow"
    assert alert["labels"] == transition_alerts(_notice("green", "yellow"), NOW, LEASE)[0]["labels"]
    assert alert["endsAt"] == "2026-03-02T09:00:30Z"  # now: resolved at once
    assert alert["startsAt"] <= alert["endsAt"]


def test_red_to_yellow_resolves_the_red_alert_and_fires_a_yellow_one() -> None:
    fired, ended = transition_alerts(_notice("red", "yellow"), NOW, LEASE)
    assert (fired["labels"]["severity"], fired["endsAt"]) == ("yellow", "2026-03-02T09:04:30Z")
    assert (ended["labels"]["severity"], ended["endsAt"]) == ("red", "2026-03-02T09:00:30Z")


def test_going_unknown_resolves_and_green_to_unknown_posts_nothing() -> None:
    [ended] = transition_alerts(_notice("red", "unknown"), NOW, LEASE)
    assert ended["endsAt"] == "2026-03-02T09:00:30Z"
    assert transition_alerts(_notice("green", "unknown"), NOW, LEASE) == []
    assert transition_alerts(_notice(None, "green"), NOW, LEASE) == []


def test_a_kpi_without_a_team_has_no_team_label() -> None:
    [alert] = transition_alerts(_notice("green", "red", team=None), NOW, LEASE)
    assert "team" not in alert["labels"]


def test_after_a_mute_the_alert_starts_when_the_episode_did() -> None:
    began = AT - timedelta(hours=3)
    state = KpiState("churn", Status.RED, began, ReviewCadence.MONTHLY, value=5.8)
    [alert] = transition_alerts(_notice("red", "red", state=state), NOW, LEASE)
    assert alert["startsAt"] == "2026-03-02T06:00:00Z"


def test_the_refresh_alert_comes_from_the_stored_state() -> None:
    began = AT - timedelta(days=2)
    state = KpiState("churn", Status.YELLOW, began, ReviewCadence.MONTHLY, value=4.25,
                     reasons=("4.25 % is above the yellow threshold 4 %",))  # fmt: skip
    alert = state_alert(_kpi(), state, URL, NOW + LEASE)
    assert alert is not None
    assert alert["labels"]["severity"] == "yellow"
    assert alert["annotations"]["summary"] == "Churn is yellow: 4.25 %"
    assert alert["annotations"]["reasons"] == "4.25 % is above the yellow threshold 4 %"
    assert (alert["startsAt"], alert["endsAt"]) == ("2026-02-28T09:00:00Z", "2026-03-02T09:04:30Z")
    green = state._replace(status=Status.GREEN)
    assert state_alert(_kpi(), green, URL, NOW + LEASE) is None


def _route(router: Router, kpi: str, kind: EventKind = EventKind.STATUS_CHANGED) -> list[Delivery]:
    return router.route(Event(kind, f"{kpi}:{kind}", AT, kpi_id=kpi, data={"to": "red"}))


def test_status_changes_route_to_the_kpi_or_team_alertmanager() -> None:
    router = Router(load_rule_text(RULES).rules,
                    channels=frozenset({"slack", "email", "log", "alertmanager"}))  # fmt: skip
    assert Delivery("alertmanager", "default") in _route(router, "churn")  # the KPI's notify
    assert Delivery("alertmanager", "default") in _route(router, "teamed")  # its team's
    assert Delivery("slack", "#cs") in _route(router, "teamed")  # besides, not instead
    assert all(d.channel != "alertmanager" for d in _route(router, "quiet"))
    escalated = _route(router, "churn", EventKind.ESCALATED)
    assert all(d.channel != "alertmanager" for d in escalated)  # alerts follow status only


def test_without_an_alertmanager_configured_the_router_falls_back_as_for_any_channel() -> None:
    rules = load_rule_text(RULES).rules
    with_slack = Router(rules, channels=frozenset({"slack", "email", "log"}))
    assert _route(with_slack, "churn") == [Delivery("slack", "#ops"),
                                           Delivery("email", "dana@example.com")]  # fmt: skip
    log_only = Router(rules, channels=frozenset({"log"}))
    assert _route(log_only, "churn") == [
        Delivery("log", "slack:#ops, email:dana@example.com, alertmanager:default")
    ]


@pytest.mark.parametrize(("where", "key"), [
    ("notify: {alertmanager: prod}", "kpis[0].notify.alertmanager: unknown Alertmanager 'prod'"),
    ("team: bad", "teams.bad.alertmanager: unknown Alertmanager 'http://am:9093'"),
])  # fmt: skip
def test_an_alertmanager_other_than_default_is_refused_at_load_naming_the_key(
    where: str, key: str
) -> None:
    text = RULES.replace("notify: {alertmanager: default}", where).replace(
        'ops: {slack: "#ops"}', 'ops: {slack: "#ops"}\n  bad: {alertmanager: "http://am:9093"}'
    )
    with pytest.raises(RuleLoadError) as caught:
        load_rule_text(text)
    problems = [str(p) for p in caught.value.problems]
    assert any(key in p and "only 'default'" in p for p in problems), problems


def test_a_kpi_removed_while_red_resolves_with_the_labels_its_rules_gave_it() -> None:
    rules = load_rule_text(RULES).rules
    began = AT - timedelta(hours=5)
    red = KpiState("teamed", Status.RED, began, ReviewCadence.MONTHLY, value=9.0)
    made = removal(rules, rules.by_id["teamed"], red, AT)
    assert made is not None
    event, delivery = made
    assert delivery == Delivery("alertmanager", "default")
    message = OutboxMessage(7, event, "alertmanager", "default", DeliveryState.PENDING, 0, AT, AT)
    notice = Notice(message, None, None, None, (), (), None, "https://kpis.example.com/")
    [alert] = transition_alerts(notice, NOW, LEASE)  # the rules no longer know the KPI
    assert alert["labels"] == {"alertname": "KpiStatus", "kpi": "teamed", "team": "cs",
                               "owner": "lee@example.com", "severity": "red"}  # fmt: skip
    assert alert["annotations"]["summary"] == "Teamed was removed from the rules"
    assert (alert["startsAt"], alert["endsAt"]) == ("2026-03-02T04:00:00Z", "2026-03-02T09:00:30Z")

    assert removal(rules, rules.by_id["teamed"], red._replace(status=Status.GREEN), AT) is None
    assert removal(rules, rules.by_id["quiet"], red._replace(kpi_id="quiet"), AT) is None
