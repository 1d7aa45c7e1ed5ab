"""Slack messages: one notice as Block Kit a person reads in five seconds, plus fallback text.

Layout, top to bottom: a header (status emoji, colour word, KPI name); what
happened; value, target, thresholds, owner, review and since as fields; the
reasons; a sparkline; the latest notes; the ack; a link to the status board.

Every piece of text from rules, data or people passes through :func:`escape`,
so a KPI named ``<!channel>`` cannot ping a channel, and every text is clipped
to its Block Kit limit *after* escaping (Slack counts the escaped form).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from kpiwatch.config.rules import Kpi
from kpiwatch.evaluation.format import fmt_age
from kpiwatch.model import Direction, EventKind, Status
from kpiwatch.notify.facts import episode_since, facts, plan_of, since_then, state_now
from kpiwatch.notify.notice import Notice
from kpiwatch.notify.render.sparkline import sparkline
from kpiwatch.notify.text import (
    ack_hint,
    data_line,
    format_value,
    headline,
    target_text,
    threshold_texts,
)

# Block Kit limits (https://api.slack.com/reference/block-kit/blocks)
MAX_BLOCKS = 50
MAX_SECTION = 3000
MAX_HEADER = 150
MAX_FIELDS = 10
MAX_FIELD = 2000
MAX_FALLBACK = 4000  # chat.postMessage truncates long text; keep the fallback short
MAX_NOTE = 600  # one annotation, so that three fit in a section
SPARK_WIDTH = 20

EMOJI = {"red": "🔴", "yellow": "⚠️", "green": "✅", "unknown": "❔"}
Block = dict[str, Any]


def escape(text: object) -> str:
    """``&``, ``<`` and ``>`` as Slack's entities: data can never become a mention or link."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    """``text`` (already escaped) cut to ``limit`` characters with "…", never inside an entity."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:  # "&am" would show as garbage: drop the stub
        cut = cut[:amp]
    return cut + "…"


def slack_message(notice: Notice) -> dict[str, Any]:
    """The ``text`` (notification fallback) and ``blocks`` of a Slack message for ``notice``."""
    blocks: list[Block] = [_header(notice), _section(_summary(notice))]
    fields = _fields(notice)
    if fields:
        blocks.append({"type": "section", "fields": fields})
    reasons = _reasons(notice)
    if reasons:
        blocks.append(_section("*Why*\n" + "\n".join(f"• {escape(_flat(r))}" for r in reasons)))
    later = _since_then(notice)
    if later:
        blocks.append({"type": "context", "elements": [_mrkdwn(later)]})
    spark = _spark(notice)
    if spark:
        blocks.append({"type": "context", "elements": [_mrkdwn(spark)]})
    if notice.annotations:
        notes = [
            f"• {_date(a.at)} — {clip(escape(_flat(a.text)), MAX_NOTE)} _({escape(a.author)})_"
            for a in notice.annotations[-3:]
        ]
        blocks.append(_section("*Notes*\n" + "\n".join(notes)))
    if notice.ack is not None:
        ack = notice.ack
        comment = f": {escape(_flat(ack.comment))}" if ack.comment else ""
        blocks.append(_section(f"🙋 *Acknowledged* by {escape(ack.author)}{comment}"))
    footer = [_mrkdwn(escape(_when(notice.event.at)))]
    link = _link(notice.url, "Open in kpiwatch")
    if link:
        footer.insert(0, _mrkdwn(link))
    blocks.append({"type": "context", "elements": footer})
    return {"text": _fallback(notice), "blocks": blocks[:MAX_BLOCKS]}


def episode_line(notice: Notice, episode: datetime) -> str:
    """What a thread's parent adds after a follow-up of its episode (mrkdwn, escaped).

    ``episode`` is the start of the parent's episode: a recovery closes it, and
    the ack shown is that episode's (acks send no message; the next one shows it).
    """
    event, data = notice.event, notice.event.data
    match event.kind:
        case EventKind.STATUS_CHANGED:
            to = str(data.get("to", "unknown"))
            took = duration(event.at - episode)
            if to == Status.GREEN.value:
                line = f"✅ *resolved* after {took}"
            else:
                emoji = EMOJI.get(to, EMOJI["unknown"])
                line = f"{emoji} became *{escape(to)}* after {took} (new thread)"
        case EventKind.ESCALATED:
            line = f"⏫ *escalated* to {escape(data.get('review', '?'))} reviews"
        case EventKind.DE_ESCALATED:
            line = f"⏬ back to {escape(data.get('review', '?'))} reviews"
        case EventKind.REVIEW_DUE:
            line = f"📅 {escape(data.get('cadence', ''))} review due {_when(event.at)}"
        case EventKind.REMINDER:
            took = duration(event.at - episode)
            line = f"⏰ reminded {_when(event.at)}: not acknowledged after {took}"
        case EventKind.ACKNOWLEDGED:  # the ack as it was given (a later one shows with later news)
            text = _flat(str(data.get("text", "")))
            comment = f": {escape(text)}" if text else ""
            return clip(f"🙋 acknowledged by {escape(data.get('author', '?'))}{comment}",
                        MAX_SECTION)  # fmt: skip
        case EventKind.ANNOTATED:
            line = f"📝 note by {escape(data.get('author', '?'))} {_when(event.at)}"
        case _:
            line = f"{escape(event.kind.value)} {_when(event.at)}"
    ack = notice.ack
    if ack is not None and ack.episode_since == episode:
        comment = f": {escape(_flat(ack.comment))}" if ack.comment else ""
        line += f" · 🙋 acknowledged by {escape(ack.author)}{comment}"
    return clip(line, MAX_SECTION)


def with_episode_line(parent: Mapping[str, Any], line: str) -> dict[str, Any]:
    """The parent message as first posted, with ``line`` under its header: for chat.update.

    Always built from the original, so each edit replaces the last state line.
    """
    blocks: list[Block] = list(parent.get("blocks") or [])
    blocks.insert(1 if blocks else 0, _section(f"*Now:* {line}"))
    text = clip(f"{parent.get('text', '')} — {_unmark(line)}", MAX_FALLBACK)
    return {"text": text, "blocks": blocks[:MAX_BLOCKS]}


def duration(delta: timedelta) -> str:
    """``3d 4h``: :func:`fmt_age` (two leading units) with a space between them."""
    return re.sub(r"(?<=[a-z])(?=\d)", " ", fmt_age(delta))


def _unmark(text: str) -> str:
    return text.replace("*", "")


# ------------------------------------------------------------------ pieces


def _status(notice: Notice) -> str:
    """The status the message is about: the event's, as it was when it happened."""
    told = facts(notice)
    return told.status if told is not None else Status.UNKNOWN.value


def _name(notice: Notice) -> str:
    event = notice.event
    if notice.kpi is not None:
        return notice.kpi.name
    return event.kpi_id or event.source or "kpiwatch"


def _header(notice: Notice) -> Block:
    event = notice.event
    if event.kind is EventKind.DATA_INCIDENT and event.kpi_id is None:
        text = f"🚫 Data incident · {escape(event.source or '?')}"
    elif event.kind is EventKind.DATA_RECOVERED:
        text = f"✅ Source recovered · {escape(event.source or '?')}"
    elif event.kind is EventKind.DATA_INCIDENT:
        text = f"❔ No data · {escape(_flat(_name(notice)))}"
    else:
        status = _status(notice)
        text = f"{EMOJI[status]} {status.capitalize()} · {escape(_flat(_name(notice)))}"
    return {"type": "header", "text": {"type": "plain_text", "text": clip(text, MAX_HEADER)}}


def _summary(notice: Notice) -> str:
    """What happened, worded per event kind."""
    event, data = notice.event, notice.event.data
    name = f"*{escape(_flat(_name(notice)))}*"
    match event.kind:
        case EventKind.STATUS_CHANGED:
            to = escape(data.get("to", "unknown"))
            if data.get("first") or not data.get("from"):
                return f"{name} is *{to}* on its first evaluation."
            return f"{name} changed from {escape(data['from'])} to *{to}*."
        case EventKind.ESCALATED:
            return (
                f"⏫ {name} *escalated* while {escape(data.get('status', 'red'))}: reviews move "
                f"from {escape(data.get('from_review', '?'))} to "
                f"*{escape(data.get('review', '?'))}* until it is stable again."
            )
        case EventKind.DE_ESCALATED:
            since = _parse(data.get("green_since"))
            run = f"green since {_when(since)}" if since else "green again"
            count = data.get("green_count")
            checks = f" ({escape(count)} checks in a row)" if count else ""
            return (
                f"⏬ {name} is *stable again* — {run}{checks}: reviews go back from "
                f"{escape(data.get('from_review', '?'))} to *{escape(data.get('review', '?'))}*."
            )
        case EventKind.REVIEW_DUE:
            badge = " `escalated`" if data.get("escalated") else ""
            return f"📅 {name} is due for its *{escape(data.get('cadence', ''))}* review{badge}."
        case EventKind.REMINDER:
            status = escape(data.get("status", "red"))
            took = duration(event.at - episode_since(event))
            return (
                f"⏰ {name} is *still {status}* after {took} and nobody has acknowledged it. "
                f"Acknowledge to stop the reminders: `{escape(ack_hint(event.kpi_id or ''))}`"
            )
        case EventKind.DATA_INCIDENT | EventKind.DATA_RECOVERED:
            return escape(_flat(data_line(event, _name(notice))))
        case EventKind.ACKNOWLEDGED:
            who = escape(data.get("author", "?"))
            return f"🙋 {name} *acknowledged* by {who}: {escape(_flat(str(data.get('text', ''))))}"
        case EventKind.ANNOTATED:
            who = escape(data.get("author", "?"))
            return f"📝 {who} on {name}: {escape(_flat(str(data.get('text', ''))))}"
        case _:
            return f"*{escape(event.kind.value)}*: {name}"


def _fields(notice: Notice) -> list[Block]:
    kpi, data, told = notice.kpi, notice.event.data, facts(notice)
    if kpi is None and told is None:
        return []  # source events: nothing about a KPI to show
    unit = kpi.unit if kpi is not None else str(data.get("unit", ""))
    value = told.value if told is not None else None
    fields: list[tuple[str, str]] = []
    if notice.event.kind is not EventKind.DE_ESCALATED or value is not None:
        fields.append(("Value", escape(format_value(value, unit))))
    plan = plan_of(notice)  # the judged period's, for a plan per period
    target = target_text(kpi, plan) if kpi is not None else None
    if target is not None:
        fields.append(("Target", escape(target)))
    if kpi is not None:
        thresholds = _thresholds(kpi, plan)
        if thresholds:
            fields.append(("Thresholds", thresholds))
        fields.append(("Owner", escape(kpi.owner) + (f" ({escape(kpi.team)})" if kpi.team else "")))
    state = state_now(notice)  # the schedule is the state's only while the episode lasts
    if state is not None:
        review = escape(state.review.value) + (" `escalated`" if state.escalated else "")
        if state.next_review is not None:
            review += f"\nnext {_when(state.next_review)}"
        fields.append(("Review", review))
    elif data.get("review") or data.get("cadence") or kpi is not None:
        cadence = data.get("review") or data.get("cadence") or (kpi.review.value if kpi else "")
        fields.append(("Review", escape(cadence)))
    if told is not None:
        fields.append((f"{escape(told.status.capitalize())} since", _when(told.episode)))
    return [_mrkdwn(clip(f"*{title}*\n{text}", MAX_FIELD)) for title, text in fields][:MAX_FIELDS]


def _thresholds(kpi: Kpi, plan: float | None) -> str:
    """``red < 1,000 $ · yellow < 1,500 $``: the side that is bad, as in the reasons;
    in % of the plan ``red < 90 % of plan (29,700 $)`` against the judged period's."""
    levels = threshold_texts(kpi, plan)
    sign = ">" if kpi.direction is Direction.LOWER_IS_BETTER else "<"
    parts = [
        f"{colour} {escape(sign)} {escape(levels[colour])}"
        for colour in ("red", "yellow")
        if colour in levels
    ]
    return " · ".join(parts)


def _reasons(notice: Notice) -> list[str]:
    told = facts(notice)
    return list(told.reasons) if told is not None else []


def _since_then(notice: Notice) -> str:
    """``now: red 950 users (...)`` when the KPI moved on after the event (a late delivery)."""
    unit = notice.kpi.unit if notice.kpi is not None else str(notice.event.data.get("unit", ""))
    lines = since_then(notice, unit)
    return " · ".join(f"⏱ {escape(_flat(line))}" for line in lines)


def _spark(notice: Notice) -> str:
    values = [o.value for o in notice.recent if math.isfinite(o.value)][-SPARK_WIDTH:]
    line = sparkline(values, SPARK_WIDTH)
    if not line:
        return ""
    unit = notice.kpi.unit if notice.kpi is not None else ""
    low, high = format_value(min(values), unit), format_value(max(values), unit)
    return f"`{line}`  last {len(values)} values · min {escape(low)} · max {escape(high)}"


def _fallback(notice: Notice) -> str:
    """The notification / screen-reader text: the headline and the first reasons."""
    text = escape(_flat(headline(notice.event, notice.kpi)))
    reasons = _reasons(notice)
    if reasons:
        text += " — " + escape("; ".join(_flat(r) for r in reasons))
    return clip(text, MAX_FALLBACK)


# ------------------------------------------------------------------ helpers


def _section(text: str) -> Block:
    return {"type": "section", "text": _mrkdwn(clip(text, MAX_SECTION))}


def _mrkdwn(text: str) -> Block:
    return {"type": "mrkdwn", "text": clip(text, MAX_SECTION)}


def _link(url: str, label: str) -> str:
    """``<url|label>`` for an http(s) URL; ``""`` for anything else (no ``javascript:``)."""
    if not url.lower().startswith(("https://", "http://")):
        return ""
    # "|" would end the URL part of the link; &, <, > would break out of it
    return f"<{escape(url).replace('|', '%7C')}|{escape(label)}>"


def _flat(text: str) -> str:
    """One line: newlines in a name or reason would break the bullet list."""
    return " ".join(text.split())


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "—"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _date(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d")


def _parse(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None
