"""Build the delivery channels the settings configure, and the jobs that send digests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import structlog

from kpiwatch.config.rules import Kpi, RuleSet
from kpiwatch.config.settings import Settings
from kpiwatch.errors import ConfigError, DeliveryError
from kpiwatch.model import SlackThread
from kpiwatch.notify.channels.alertmanager import AlertmanagerChannel, state_alert
from kpiwatch.notify.channels.base import Channel
from kpiwatch.notify.channels.email import EmailChannel
from kpiwatch.notify.channels.log import LogChannel
from kpiwatch.notify.channels.webhook import WebhookChannel
from kpiwatch.notify.digests import ONCALL, oncall_digest, review_digests
from kpiwatch.notify.notices import kpi_url
from kpiwatch.notify.render.email import oncall_email, review_email
from kpiwatch.notify.routing import alertmanager_for
from kpiwatch.store.repository import Store

log = structlog.get_logger("kpiwatch.channels")


class StoreThreads:
    """Slack thread timestamps per KPI episode, kept in the store (survive restarts)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def get(self, kpi_id: str, channel: str, episode_since: datetime) -> SlackThread | None:
        return self._store.slack_thread(kpi_id, channel, episode_since)

    def put(
        self, kpi_id: str, channel: str, episode_since: datetime, thread: SlackThread
    ) -> None:
        self._store.save_slack_thread(kpi_id, channel, episode_since, thread.ts, thread.parent)


def build_channels(
    settings: Settings, store: Store, now: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> dict[str, Channel]:
    """The log and webhook channels always; Slack, email and Alertmanager when configured."""
    channels: dict[str, Channel] = {"log": LogChannel()}
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
    channels["webhook"] = WebhookChannel(secret=secret)
    token = settings.slack_token.get_secret_value() if settings.slack_token else None
    hook = settings.slack_webhook_url.get_secret_value() if settings.slack_webhook_url else None
    if token or hook:  # slack_sdk is imported only when Slack is configured
        from kpiwatch.notify.channels.slack import SlackChannel

        channels["slack"] = SlackChannel(
            token=token, webhook_url=None if token else hook, api_url=settings.slack_api_url,
            threads=StoreThreads(store),
        )  # fmt: skip
    email = email_channel(settings)
    if email is not None:
        channels["email"] = email
    if settings.alertmanager_url:
        channels["alertmanager"] = AlertmanagerChannel(
            settings.alertmanager_url, now=now,
            refresh=timedelta(seconds=settings.alertmanager_refresh),
        )  # fmt: skip
    return channels


def email_channel(settings: Settings) -> EmailChannel | None:
    if not settings.smtp_host:
        return None
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    return EmailChannel(
        host=settings.smtp_host, port=settings.smtp_port, username=settings.smtp_username,
        password=password, starttls=settings.smtp_starttls and not settings.smtp_ssl,
        ssl=settings.smtp_ssl, sender=settings.email_from,
    )  # fmt: skip


def verify_slack(channels: dict[str, Channel]) -> None:
    """Check the Slack token at start: a bad one is a configuration error, not a retry."""
    if "slack" not in channels:
        return
    from kpiwatch.notify.channels.slack import SlackChannel

    slack = channels["slack"]
    if not isinstance(slack, SlackChannel):
        return
    try:
        who = slack.verify()
    except DeliveryError as exc:
        if not exc.retryable:
            raise ConfigError(f"Slack: {exc}") from None
        log.warning("Slack not reachable at start; messages wait in the outbox", error=str(exc))
        return
    log.info("Slack token verified", workspace=who)


def send_oncall_digest(
    store: Store, rules: RuleSet, settings: Settings, email: EmailChannel | None, now: datetime
) -> str:
    """Send (or log) the on-call digest and remember when; returns what was done.

    The mark is only moved on success, so a digest that failed is sent again
    (covering the same period and more) at the next run.
    """
    digest = oncall_digest(store, rules, settings.base_url, now)
    if email is None or not settings.oncall_emails:
        log.warning("on-call digest (no SMTP or no KPIWATCH_ONCALL_EMAILS: logged only)",
                    attention=[d.kpi.id for d in digest.attention],
                    transitions=len(digest.transitions), dead=len(digest.dead))  # fmt: skip
        store.set_digest_mark(ONCALL, now)
        return "logged"
    email.deliver(oncall_email(digest, sender=settings.email_from, to=settings.oncall_emails))
    store.set_digest_mark(ONCALL, now)
    return f"sent to {', '.join(settings.oncall_emails)}"


def send_review_digests(
    store: Store, rules: RuleSet, settings: Settings, email: EmailChannel, now: datetime
) -> int:
    """Email each owner the KPIs due for review today; returns how many emails."""
    digests = review_digests(store, rules, settings.base_url, now, settings.tz)
    for digest in digests:
        email.deliver(review_email(digest, sender=settings.email_from))
    return len(digests)


def refresh_alerts(
    store: Store, rules: RuleSet, channel: AlertmanagerChannel, base_url: str, now: datetime,
    *, held_back: Callable[[Kpi, datetime], str | None],
) -> int:  # fmt: skip
    """Post again the alert of every red or yellow KPI that routes to Alertmanager, so
    its lease does not run out; returns how many. KPIs silenced or muted here are
    left out: their alerts resolve when their lease ends, as their news is held back.
    Raises DeliveryError; nothing to retry, the next refresh posts them all again."""
    states = store.states()
    ends_at = now + channel.lease
    alerts = []
    for kpi in rules.kpis:
        state = states.get(kpi.id)
        if state is None or alertmanager_for(rules, kpi) is None:
            continue
        alert = state_alert(kpi, state, kpi_url(base_url, kpi.id), ends_at)
        if alert is not None and held_back(kpi, now) is None:
            alerts.append(alert)
    for start in range(0, len(alerts), _REFRESH_BATCH):
        channel.post(alerts[start : start + _REFRESH_BATCH])
    return len(alerts)


_REFRESH_BATCH = 500  # alerts per POST: bounded request bodies at 10,000 KPIs


def channel_names(settings: Settings) -> frozenset[str]:
    """The channels the settings configure, for routing without building them."""
    names = {"log", "webhook"}
    if settings.slack_token or settings.slack_webhook_url:
        names.add("slack")
    if settings.smtp_host:
        names.add("email")
    if settings.alertmanager_url:
        names.add("alertmanager")
    return frozenset(names)
