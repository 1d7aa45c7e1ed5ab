"""Routing: KPI notify, else team, else owner; unconfigured channels fall back to the log."""

from __future__ import annotations

from datetime import UTC, datetime

from kpiwatch.config.loader import load_rule_text
from kpiwatch.model import Delivery, Event, EventKind
from kpiwatch.notify.routing import Router

RULES = """
sources:
  wh: {type: sql, url: "sqlite://", owner: data@example.com}
  api: {type: sql, url: "sqlite://"}
teams:
  cs: {slack: "#cs", email: [cs@example.com]}
kpis:
  - {id: own, name: Own, owner: dana@example.com, team: cs, direction: lower_is_better,
     source: wh, query: "SELECT 1", notify: {slack: "#war-room", email: [boss@example.com]}}
  - {id: teamed, name: Teamed, owner: lee@example.com, team: cs, direction: lower_is_better,
     source: wh, query: "SELECT 1"}
  - {id: lonely, name: Lonely, owner: kim@example.com, direction: lower_is_better,
     source: wh, query: "SELECT 1"}
"""
AT = datetime(2026, 3, 2, tzinfo=UTC)
ALL = frozenset({"slack", "email", "log"})


def _event(
    kind: EventKind, kpi: str | None = None, source: str | None = None, **data: object
) -> Event:
    return Event(kind, f"k-{kind}-{kpi}", AT, kpi_id=kpi, source=source, data=data)


def _router(
    channels: frozenset[str] = ALL, oncall: tuple[str, ...] = ("oncall@example.com",)
) -> Router:
    return Router(load_rule_text(RULES).rules, channels=channels, oncall_emails=oncall)


def test_status_change_goes_to_the_kpi_channel_and_red_also_emails_the_owner() -> None:
    router = _router()
    yellow = router.route(_event(EventKind.STATUS_CHANGED, "own", to="yellow"))
    red = router.route(_event(EventKind.STATUS_CHANGED, "own", to="red"))
    assert yellow == [Delivery("slack", "#war-room")]
    assert red == [Delivery("slack", "#war-room"), Delivery("email", "dana@example.com")]


def test_team_channel_is_used_when_the_kpi_has_no_notify() -> None:
    assert _router().route(_event(EventKind.STATUS_CHANGED, "teamed", to="yellow")) == [
        Delivery("slack", "#cs")
    ]


def test_owner_email_when_neither_kpi_nor_team_say_where() -> None:
    assert _router().route(_event(EventKind.STATUS_CHANGED, "lonely", to="yellow")) == [
        Delivery("email", "kim@example.com")
    ]


def test_escalation_posts_and_emails_owner_and_review_emails_owner_and_team_channel() -> None:
    router = _router()
    assert router.route(_event(EventKind.ESCALATED, "own")) == [
        Delivery("slack", "#war-room"),
        Delivery("email", "dana@example.com"),
    ]
    assert router.route(_event(EventKind.REVIEW_DUE, "own")) == [
        Delivery("email", "dana@example.com"),
        Delivery("slack", "#cs"),
    ]


def test_source_incidents_go_to_the_source_owner_else_on_call() -> None:
    router = _router()
    for kind in (EventKind.DATA_INCIDENT, EventKind.DATA_RECOVERED):
        assert router.route(_event(kind, source="wh")) == [Delivery("email", "data@example.com")]
        assert router.route(_event(kind, source="api")) == [
            Delivery("email", "oncall@example.com")
        ]


def test_a_kpis_own_data_problem_goes_to_its_owner_and_to_no_channel() -> None:
    router = _router()
    # "own" has a Slack channel, a team and a webhook-free notify: only the owner hears
    notice = _event(EventKind.DATA_INCIDENT, "own", source="wh")
    assert router.route(notice) == [Delivery("email", "dana@example.com")]


def test_events_stored_by_0_1_read_as_data_incidents() -> None:
    assert EventKind("source_down") is EventKind.DATA_INCIDENT
    assert EventKind("source_recovered") is EventKind.DATA_RECOVERED


def test_without_slack_or_smtp_everything_goes_to_the_log_naming_the_intended_recipients() -> None:
    router = _router(channels=frozenset({"log"}))
    deliveries = router.route(_event(EventKind.STATUS_CHANGED, "own", to="red"))
    assert deliveries == [Delivery("log", "slack:#war-room, email:dana@example.com")]


def test_an_event_with_nobody_to_tell_still_reaches_the_log() -> None:
    router = _router(channels=frozenset({"log"}), oncall=())
    assert router.route(_event(EventKind.DATA_INCIDENT, source="api")) == [
        Delivery("log", "on-call")
    ]


def test_webhooks_receive_every_kpi_event_from_notify_or_team() -> None:
    rules = load_rule_text(
        RULES.replace('cs: {slack: "#cs"', 'cs: {webhook: "https://hooks.test/cs", slack: "#cs"')
    ).rules
    router = Router(rules, channels=ALL | {"webhook"})
    assert Delivery("webhook", "https://hooks.test/cs") in router.route(
        _event(EventKind.STATUS_CHANGED, "teamed", to="yellow")
    )
    assert Delivery("webhook", "https://hooks.test/cs") in router.route(
        _event(EventKind.REVIEW_DUE, "teamed")
    )


def test_a_reminder_goes_where_a_change_to_its_status_went() -> None:
    router = _router()
    red = router.route(_event(EventKind.REMINDER, "own", status="red"))
    yellow = router.route(_event(EventKind.REMINDER, "own", status="yellow"))
    lonely = router.route(_event(EventKind.REMINDER, "lonely", status="red"))
    assert red == [Delivery("slack", "#war-room"), Delivery("email", "dana@example.com")]
    assert yellow == [Delivery("slack", "#war-room")]
    assert lonely == [Delivery("email", "kim@example.com")]


def test_acks_and_annotations_go_to_the_episodes_chat_only() -> None:
    router = _router()
    for kind in (EventKind.ACKNOWLEDGED, EventKind.ANNOTATED):
        assert router.route(_event(kind, "own")) == [Delivery("slack", "#war-room")]
