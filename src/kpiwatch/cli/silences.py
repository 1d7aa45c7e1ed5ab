"""Commands people use around alerts: `silence add|list|expire`, `ack`, `annotate`.

They write to the store directly, without the daemon's instance lock (like
`push`): each is one small transaction the daemon reads on its next pass.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from kpiwatch.cli.common import (
    fail,
    friendly_errors,
    kpi_or_exit,
    load_settings,
    load_settings_rules,
    parse_time,
    print_json,
)
from kpiwatch.cli.group import main
from kpiwatch.config.durations import parse_duration
from kpiwatch.config.rules import RuleSet
from kpiwatch.config.settings import Settings
from kpiwatch.model import MatcherKind, Silence

if TYPE_CHECKING:
    from kpiwatch.notify.routing import Router
    from kpiwatch.store.repository import Store

_AUTHOR_HELP = "Who you are; default $USER."


def _default_author() -> str:
    return os.environ.get("USER") or "unknown"


@contextmanager
def _open_store(settings: Settings, *, create: bool = True) -> Iterator[Store]:
    from kpiwatch.store.repository import Store  # the store pulls in SQLAlchemy: import late

    store = Store.open(settings.database_url.get_secret_value(), create=create)
    try:
        yield store
    finally:
        store.close()


def _router(settings: Settings, rules: RuleSet) -> Router:
    """Routing as the daemon does it, for the events a command records (an ack's)."""
    from kpiwatch.notify.routing import Router
    from kpiwatch.runtime.channels import channel_names

    return Router(rules, channels=channel_names(settings), oncall_emails=settings.oncall_emails)


def _when(moment: datetime, settings: Settings) -> str:
    """A stored (UTC) time as people read it: in KPIWATCH_TIMEZONE, to the second."""
    return moment.astimezone(settings.tz).isoformat(timespec="seconds")


# -- silences ------------------------------------------------------------------------------


@main.group()
def silence() -> None:
    """Hold back notifications for a KPI, a team or a label for a while."""


@silence.command("add")
@click.option("--kpi", "kpi_id", metavar="ID", help="Silence one KPI.")
@click.option("--team", metavar="NAME", help="Silence every KPI of a team.")
@click.option("--label", metavar="KEY=VALUE", help="Silence every KPI with this label.")
@click.option("--for", "for_text", required=True, metavar="DURATION", help="e.g. 2h, 1d, 1h30m.")
@click.option("--comment", required=True, help="Why; shown wherever the silence is.")
@click.option("--author", help=_AUTHOR_HELP)
@click.pass_context
@friendly_errors
def silence_add(
    ctx: click.Context,
    kpi_id: str | None,
    team: str | None,
    label: str | None,
    for_text: str,
    comment: str,
    author: str | None,
) -> None:
    """Silence notifications from now on for DURATION (events are still recorded)."""
    given = [(kind, v) for kind, v in _matchers(kpi_id, team, label) if v is not None]
    if len(given) != 1:
        fail("give exactly one of --kpi ID, --team NAME or --label KEY=VALUE")
    matcher, value = given[0]
    try:
        duration = parse_duration(for_text)
    except ValueError as exc:
        fail(f"--for: {exc}")
        raise  # unreachable: fail exits
    if not comment.strip():
        fail("--comment must say why")
    settings = load_settings(ctx)
    rules = load_settings_rules(settings).rules
    value = _checked_matcher(rules, matcher, value)
    now = datetime.now(UTC)
    with _open_store(settings) as store:
        added = store.add_silence(
            matcher, value, now, now + duration, author or _default_author(), comment, now
        )
    click.echo(
        f"silence #{added.id}: {matcher.value} {value} until {_when(added.ends_at, settings)}"
    )


def _matchers(
    kpi_id: str | None, team: str | None, label: str | None
) -> list[tuple[MatcherKind, str | None]]:
    return [(MatcherKind.KPI, kpi_id), (MatcherKind.TEAM, team), (MatcherKind.LABEL, label)]


def _checked_matcher(rules: RuleSet, matcher: MatcherKind, value: str) -> str:
    """The matcher's value, normalised; exits 2 when it names nothing in the rules."""
    if matcher is MatcherKind.KPI:
        kpi_or_exit(rules, value)
        return value
    if matcher is MatcherKind.TEAM:
        if value not in rules.teams:  # the loader already checks every KPI's team is listed
            close = difflib.get_close_matches(value, sorted(rules.teams), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            fail(f"no team {value!r} in the rules{hint}")
        return value
    key, sep, label_value = value.partition("=")
    key, label_value = key.strip(), label_value.strip()
    if not sep or not key or not label_value:
        fail(f"--label {value!r}: write KEY=VALUE, e.g. region=emea")
    normalised = f"{key}={label_value}"
    if not any(k.labels.get(key) == label_value for k in rules.kpis):
        # allowed (the label may be added soon), but probably a typo: say so
        click.echo(f"kpiwatch: warning: no KPI has the label {normalised} now", err=True)
    return normalised


@silence.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include ended and expired silences.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.pass_context
@friendly_errors
def silence_list(ctx: click.Context, show_all: bool, as_json: bool) -> None:
    """Active silences, newest first (all of them with --all)."""
    settings = load_settings(ctx)
    now = datetime.now(UTC)
    with _open_store(settings, create=False) as store:
        found = store.silences(active_at=None if show_all else now)
    if as_json:
        print_json([_silence_json(s, now) for s in found])
        return
    if not found:
        click.echo("no silences" if show_all else "no active silences")
        return
    for s in found:
        click.echo(
            f"#{s.id}  {s.matcher.value} {s.value}  {_silence_state(s, now)}  "
            f"{_when(s.starts_at, settings)} -> {_when(s.ends_at, settings)}  "
            f"by {s.author}: {s.comment}"
        )


def _silence_state(s: Silence, now: datetime) -> str:
    if s.active(now):
        return "active"
    if s.expired_at is not None and s.expired_at < s.ends_at:
        return "expired"
    return "pending" if now < s.starts_at else "ended"


def _silence_json(s: Silence, now: datetime) -> dict[str, Any]:
    return {
        "id": s.id,
        "matcher": s.matcher.value,
        "value": s.value,
        "starts_at": s.starts_at.isoformat(),
        "ends_at": s.ends_at.isoformat(),
        "author": s.author,
        "comment": s.comment,
        "created_at": s.created_at.isoformat(),
        "expired_at": None if s.expired_at is None else s.expired_at.isoformat(),
        "state": _silence_state(s, now),
    }


@silence.command("expire")
@click.argument("silence_id", metavar="ID", type=int)
@click.pass_context
@friendly_errors
def silence_expire(ctx: click.Context, silence_id: int) -> None:
    """End a silence now."""
    settings = load_settings(ctx)
    now = datetime.now(UTC)
    with _open_store(settings) as store:
        before = next((s for s in store.silences() if s.id == silence_id), None)
        if before is not None and not before.active(now) and now >= before.starts_at:
            click.echo(f"silence #{silence_id} had already {_silence_state(before, now)}")
            return
        expired = store.expire_silence(silence_id, now)
    click.echo(f"expired silence #{expired.id} ({expired.matcher.value} {expired.value})")


# -- acks and annotations --------------------------------------------------------------------


@main.command()
@click.argument("kpi_id", metavar="ID")
@click.option("--comment", required=True, help="What you are doing about it.")
@click.option("--author", help=_AUTHOR_HELP)
@click.pass_context
@friendly_errors
def ack(ctx: click.Context, kpi_id: str, comment: str, author: str | None) -> None:
    """Own a red or yellow KPI's current episode: reminders stop, reviews go on."""
    if not comment.strip():
        fail("--comment must say what you are doing about it")
    settings = load_settings(ctx)
    rules = load_settings_rules(settings).rules
    kpi = kpi_or_exit(rules, kpi_id)
    with _open_store(settings) as store:
        state = store.get_state(kpi_id)
        if state is None:
            fail(f"KPI {kpi_id!r} has not been evaluated yet: nothing to acknowledge")
            raise AssertionError("unreachable")  # fail exits; narrows state for mypy
        if not state.ackable:  # a blind episode too: its verdict's
            fail(f"KPI {kpi_id!r} is {state.status.value}: only red or yellow can be acknowledged")
        who = author or _default_author()
        from kpiwatch.notify import follow_ups

        acked = follow_ups.acknowledge(store, _router(settings, rules), kpi, state, who, comment,
                                       datetime.now(UTC))  # fmt: skip
    click.echo(
        f"acknowledged {kpi_id}: {state.episode_status.value} since "
        f"{_when(state.since, settings)} "
        f"by {acked.author}: {acked.comment}"
    )


@main.command()
@click.argument("kpi_id", metavar="ID")
@click.argument("text")
@click.option("--at", "at_text", help="The moment it explains (ISO 8601); default now.")
@click.option("--author", help=_AUTHOR_HELP)
@click.pass_context
@friendly_errors
def annotate(
    ctx: click.Context, kpi_id: str, text: str, at_text: str | None, author: str | None
) -> None:
    """Record why a KPI moved; shown with its history and notifications."""
    if not text.strip():
        fail("the annotation text is empty")
    settings = load_settings(ctx)
    rules = load_settings_rules(settings).rules
    kpi = kpi_or_exit(rules, kpi_id)
    now = datetime.now(UTC)
    moment = parse_time(at_text, settings) if at_text else now
    from kpiwatch.notify import follow_ups

    with _open_store(settings) as store:
        note = follow_ups.annotate(store, _router(settings, rules), kpi, moment, text,
                                   author or _default_author(), now)  # fmt: skip
    click.echo(f"annotated {kpi_id} at {_when(note.at, settings)} (#{note.id}): {note.text}")
