"""`digest` and `outbox`: what people are told, on demand."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from kpiwatch.cli.common import (
    fail,
    friendly_errors,
    load_settings,
    load_settings_rules,
    print_json,
)
from kpiwatch.cli.group import main
from kpiwatch.errors import DeliveryError
from kpiwatch.model import DeliveryState
from kpiwatch.notify.digests import oncall_digest, review_digests
from kpiwatch.notify.render.email import oncall_email, review_email
from kpiwatch.runtime.channels import email_channel, send_oncall_digest, send_review_digests
from kpiwatch.store.repository import Store


@main.command()
@click.argument("kind", type=click.Choice(["oncall", "review"]))
@click.option("--send", is_flag=True, help="Send it by email now (else print it).")
@click.pass_context
@friendly_errors
def digest(ctx: click.Context, kind: str, send: bool) -> None:
    """Render (or send) the on-call digest or the review digests now."""
    settings = load_settings(ctx)
    rules = load_settings_rules(settings).rules
    now = datetime.now(UTC)
    email = email_channel(settings)
    if send and email is None:
        fail("cannot send: no SMTP configured (KPIWATCH_SMTP_HOST)")
    with Store.open(settings.database_url.get_secret_value(), create=False) as store:
        try:
            if kind == "oncall" and send:
                done = send_oncall_digest(store, rules, settings, email, now)
                click.echo(f"on-call digest {done}")
            elif kind == "review" and send:
                assert email is not None
                count = send_review_digests(store, rules, settings, email, now)
                click.echo(f"sent {count} review digest(s)")
            elif kind == "oncall":
                message = oncall_email(oncall_digest(store, rules, settings.base_url, now),
                                       sender=settings.email_from, to=settings.oncall_emails)
                click.echo(_text(message))
            else:
                due = review_digests(store, rules, settings.base_url, now, settings.tz)
                for one in due:
                    click.echo(_text(review_email(one, sender=settings.email_from)))
                if not due:  # an empty answer would look like a failure
                    click.echo(f"no review digest: none of the {len(rules.kpis)} KPIs is due")
        except DeliveryError as exc:
            fail(f"digest not sent: {exc}", 1)


def _text(message: object) -> str:
    from email.message import EmailMessage

    assert isinstance(message, EmailMessage)
    body = message.get_body(preferencelist=("plain",))
    text = body.get_content() if body is not None else ""
    return f"To: {message['To']}\nSubject: {message['Subject']}\n\n{text}"


@main.group()
def outbox() -> None:
    """Notifications waiting, sent, suppressed or dead."""


@outbox.command("list")
@click.option("--state", "states", multiple=True,
              type=click.Choice([s.value for s in DeliveryState]),
              help="Only these states (repeatable); default all.")  # fmt: skip
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@friendly_errors
def outbox_list(ctx: click.Context, states: tuple[str, ...], limit: int, as_json: bool) -> None:
    """List notifications, newest first."""
    settings = load_settings(ctx)
    wanted = [DeliveryState(s) for s in states] or None
    with Store.open(settings.database_url.get_secret_value(), create=False) as store:
        rows = store.messages(states=wanted, limit=limit)
    if as_json:
        print_json([{
            "id": m.id, "state": m.state.value, "channel": m.channel, "target": m.target,
            "event": m.event.kind.value, "kpi": m.event.kpi_id, "source": m.event.source,
            "attempts": m.attempts, "created_at": m.created_at.isoformat(),
            "next_attempt_at": m.next_attempt_at.isoformat(),
            "sent_at": m.sent_at.isoformat() if m.sent_at else None, "last_error": m.last_error,
        } for m in rows])  # fmt: skip
        return
    for m in rows:
        what = m.event.kpi_id or m.event.source or ""
        error = f"  ({m.last_error})" if m.last_error else ""
        click.echo(f"{m.id:>6}  {m.state.value:<10} {m.channel:<7} {m.target:<30} "
                   f"{m.event.kind.value:<16} {what}  tries={m.attempts}{error}")  # fmt: skip


@outbox.command("retry")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all-dead", is_flag=True, help="Retry every dead notification.")
@click.pass_context
@friendly_errors
def outbox_retry(ctx: click.Context, ids: tuple[int, ...], all_dead: bool) -> None:
    """Put dead notifications back in the queue; the daemon (or run --once) sends them."""
    if not ids and not all_dead:
        fail("name notification ids, or --all-dead")
    settings = load_settings(ctx)
    with Store.open(settings.database_url.get_secret_value()) as store:
        count = store.retry_dead(None if all_dead else list(ids), datetime.now(UTC))
    click.echo(f"{count} notification(s) queued again")
