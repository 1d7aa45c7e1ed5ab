"""Emails: a notice, an owner's review digest, the on-call digest.

Each is multipart/alternative: plain text for any client, and HTML (in a
multipart/related with one inline PNG chart per KPI, referenced by Content-ID)
for the rest. Subjects lead with what matters so a list of them can be triaged.
Header values pass through :func:`_header`, so a KPI name with a newline cannot
add headers.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kpiwatch.config.rules import Kpi
from kpiwatch.model import (
    Ack,
    Annotation,
    Direction,
    Event,
    EventKind,
    KpiState,
    Observation,
    Status,
)
from kpiwatch.notify.digest_model import DigestKpi, OncallDigest, ReviewDigest
from kpiwatch.notify.facts import facts, plan_of, since_then, state_now
from kpiwatch.notify.notice import Notice
from kpiwatch.notify.render.chart import trend_chart
from kpiwatch.notify.text import ack_hint, format_value, headline, target_text, threshold_texts

if TYPE_CHECKING:
    import jinja2

PREFIX = "[kpiwatch]"
COLOURS = {"red": "#d93025", "yellow": "#f9ab00", "green": "#1e8e3e", "unknown": "#80868b"}
EMOJI = {"red": "🔴", "yellow": "⚠️", "green": "✅", "unknown": "❔"}
_SEVERITY = {"red": 0, "yellow": 1, "unknown": 2, "green": 3}
_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
_BREAKS = re.compile(r"[\r\n\t\v\f\x00-\x1f\x7f\u2028\u2029\x85]+")


@cache
def _env() -> jinja2.Environment:
    import jinja2  # on the first render: a daemon that renders none never loads it

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        # HTML templates escape every value; text templates must not (``&amp;`` in plain text)
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["when"] = _when
    env.globals.update(colours=COLOURS, emoji=EMOJI)
    return env


def _render(template: str, /, **context: Any) -> str:
    return _env().get_template(template).render(**context)


def _when(value: datetime | None) -> str:
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _header(text: str, limit: int = 200) -> str:
    """One line, control characters folded to spaces, at most ``limit`` characters."""
    flat = " ".join(_BREAKS.sub(" ", text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# ---------------------------------------------------------------- what templates show


@dataclass(frozen=True)
class Chart:
    cid: str  # Content-ID without the angle brackets
    png: bytes
    alt: str


@dataclass(frozen=True)
class KpiView:
    """One KPI as an email shows it; the same for notices and digests."""

    id: str
    name: str
    status: str
    value: str
    target: str | None
    thresholds: str | None
    direction: str
    reasons: tuple[str, ...]
    owner: str
    review: str
    escalated_since: datetime | None
    next_review: datetime | None
    since: datetime | None
    error: str | None
    annotations: tuple[Annotation, ...]
    ack: Ack | None
    url: str
    chart: Chart | None

    @property
    def colour(self) -> str:
        return COLOURS.get(self.status, COLOURS["unknown"])


def _kpi_view(
    kpi: Kpi,
    state: KpiState | None,
    recent: Sequence[Observation],
    annotations: Sequence[Annotation],
    ack: Ack | None,
    url: str,
    *,
    chart_size: tuple[int, int] | None,
    index: int,
    status: str | None = None,
    value: float | None = None,
    reasons: Sequence[str] = (),
    since: datetime | None = None,
    plan: float | None = None,
) -> KpiView:
    """``plan`` is the judged period's, for a KPI with a plan per period: its target,
    and what thresholds in % of it come to."""
    status = status or (state.status.value if state else Status.UNKNOWN.value)
    value = value if value is not None else (state.value if state else None)
    reasons = tuple(reasons) or (state.reasons if state else ())
    since = since or (state.since if state else None)
    parts = [f"{name} {level}" for name, level in threshold_texts(kpi, plan).items()]
    target = target_text(kpi, plan)
    chart = None
    if chart_size is not None:
        chart = Chart(
            cid=f"chart{index}.{kpi.id}@kpiwatch",
            png=_chart(kpi, recent, chart_size),
            alt=_header(f"{kpi.name}: last {len(recent)} values", 120),
        )
    return KpiView(
        id=kpi.id,
        name=kpi.name,
        status=status,
        value=format_value(value, kpi.unit),
        target=target,
        thresholds=", ".join(parts) or None,
        direction="lower is better"
        if kpi.direction is Direction.LOWER_IS_BETTER
        else "higher is better",
        reasons=reasons,
        owner=kpi.owner,
        review=(state.review if state else kpi.review).value,
        escalated_since=state.escalated_since if state else None,
        next_review=state.next_review if state else None,
        since=since,
        error=state.error if state else None,
        annotations=tuple(annotations),
        ack=ack,
        url=url,
        chart=chart,
    )


def _chart(kpi: Kpi, recent: Sequence[Observation], size: tuple[int, int]) -> bytes:
    """The recent values against the thresholds and target; thresholds in % of a plan
    are left out (they are no level in the KPI's unit: each period has its own)."""
    thresholds: dict[str, float] = {}
    if kpi.thresholds is not None and not kpi.thresholds.percent:
        if kpi.thresholds.yellow is not None:
            thresholds["yellow"] = kpi.thresholds.yellow
        if kpi.thresholds.red is not None:
            thresholds["red"] = kpi.thresholds.red
    target = kpi.target
    glide = None
    dated = target is not None and target.by is not None and target.value is not None
    if dated and target is not None and (recent or target.baseline is not None):
        start_at = (
            datetime.combine(target.baseline_date, time(), UTC)
            if target.baseline_date
            else recent[0].observed_at
        )
        start_value = target.baseline if target.baseline is not None else recent[0].value
        assert target.by is not None  # dated
        assert target.value is not None
        glide = ((start_at, start_value), (datetime.combine(target.by, time(), UTC), target.value))
    return trend_chart(
        [(o.observed_at, o.value) for o in recent],
        thresholds=thresholds,
        target=target.value if target else None,
        glide=glide,
        width=size[0],
        height=size[1],
    )


def _digest_view(item: DigestKpi, index: int, size: tuple[int, int]) -> KpiView:
    plan = item.state.plan if item.state is not None else None
    return _kpi_view(item.kpi, item.state, item.recent, item.annotations, item.ack, item.url,
                     chart_size=size, index=index, plan=plan)  # fmt: skip


# ---------------------------------------------------------------- assembling


def _message(
    *, sender: str, to: Sequence[str], subject: str, text: str, html: str,
    charts: Iterable[Chart],
) -> EmailMessage:  # fmt: skip
    message = EmailMessage()
    message["Subject"] = _header(subject)
    message["From"] = _header(sender)
    message["To"] = ", ".join(_header(a) for a in to if a.strip())
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain=_domain(sender))
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    html_part = message.get_body(preferencelist=("html",))
    assert isinstance(html_part, EmailMessage)
    for chart in charts:
        html_part.add_related(
            chart.png, maintype="image", subtype="png", cid=f"<{chart.cid}>",
            filename=f"{chart.cid.split('@')[0]}.png",
        )  # fmt: skip
    return message


def _domain(sender: str) -> str:
    try:
        domain = Address(addr_spec=_header(sender)).domain
    except (ValueError, IndexError):
        domain = ""
    return domain or "kpiwatch"


def _kpi_name(notice: Notice) -> str:
    event = notice.event
    return notice.kpi.name if notice.kpi else (event.kpi_id or event.source or "kpiwatch")


def _subject(notice: Notice) -> str:
    event, data = notice.event, notice.event.data
    if event.kind is EventKind.STATUS_CHANGED:
        to = str(data.get("to", "unknown"))
        unit = notice.kpi.unit if notice.kpi else str(data.get("unit", ""))
        was = f" (was {data['from']})" if data.get("from") else ""
        value = format_value(data.get("value"), unit)
        return f"{PREFIX} {EMOJI.get(to, '')} {_kpi_name(notice)} is {to}: {value}{was}"
    return f"{PREFIX} {headline(event, notice.kpi)}"


def notice_email(notice: Notice, *, sender: str) -> EmailMessage:
    """One event about one KPI (or source), to ``notice.message.target``.

    The KPI is shown as the event found it (:func:`facts`), with a line on what
    changed since when the email goes out late.
    """
    event, data = notice.event, notice.event.data
    view = None
    later: list[str] = []
    told = facts(notice)
    if notice.kpi is not None and told is not None:
        view = _kpi_view(
            notice.kpi, state_now(notice), notice.recent, notice.annotations, notice.ack,
            notice.url, chart_size=(560, 180), index=0, status=told.status, value=told.value,
            reasons=told.reasons, since=told.episode, plan=plan_of(notice),
        )  # fmt: skip
        later = since_then(notice, notice.kpi.unit)
    context = {
        "headline": headline(event, notice.kpi),
        "ack_hint": ack_hint(event.kpi_id or ""),
        "event": event,
        "kind": event.kind.value,
        "data": data,
        "kpi": view,
        "later": later,
        "source": event.source,
        "url": notice.url,
        "name": _kpi_name(notice),
    }
    return _message(
        sender=sender,
        to=[notice.message.target],
        subject=_subject(notice),
        text=_render("notice.txt.j2", **context),
        html=_render("notice.html.j2", **context),
        charts=[view.chart] if view and view.chart else [],
    )


def _worst_first(items: Sequence[KpiView]) -> list[KpiView]:
    return sorted(items, key=lambda v: _SEVERITY.get(v.status, 2))  # stable: keeps digest order


def review_email(digest: ReviewDigest, *, sender: str) -> EmailMessage:
    """The KPIs one owner should review, worst first, to ``digest.owner``."""
    views = _worst_first([_digest_view(d, i, (560, 110)) for i, d in enumerate(digest.due)])
    count = len(views)
    red = sum(v.status == "red" for v in views)
    subject = f"{PREFIX} {count} KPI{'s' if count != 1 else ''} due for review"
    if red:
        subject += f" ({red} red)"
    context = {"digest": digest, "kpis": views}
    return _message(
        sender=sender, to=[digest.owner], subject=subject,
        text=_render("review.txt.j2", **context), html=_render("review.html.j2", **context),
        charts=[v.chart for v in views if v.chart],
    )  # fmt: skip


def oncall_email(digest: OncallDigest, *, sender: str, to: Sequence[str]) -> EmailMessage:
    """What needs attention now and what happened since the last digest."""
    views = _worst_first([_digest_view(d, i, (560, 110)) for i, d in enumerate(digest.attention)])
    names = {v.id: v.name for v in views}
    counts = [(sum(v.status == s for v in views), s) for s in ("red", "yellow", "unknown")]
    parts = [f"{n} {s}" for n, s in counts if n]
    if digest.dead:
        parts.append(f"{len(digest.dead)} undelivered")
    summary = ", ".join(parts) if parts else (
        "nothing needs attention" if digest.quiet else "all green"
    )  # fmt: skip
    context = {
        "digest": digest,
        "kpis": views,
        "names": names,
        "escalations": [(e, _escalation(e, names)) for e in digest.escalations],
        "sources": [(e, headline(e, None)) for e in digest.source_problems],
        "summary": summary,
    }
    return _message(
        sender=sender, to=to, subject=f"{PREFIX} on-call digest: {summary}",
        text=_render("oncall.txt.j2", **context), html=_render("oncall.html.j2", **context),
        charts=[v.chart for v in views if v.chart],
    )  # fmt: skip


def _escalation(event: Event, names: dict[str, str]) -> str:
    # headline() wants a Kpi for the name; the digest only has names of attention KPIs
    text = headline(event, None)
    kpi_id = event.kpi_id or ""
    return text.replace(kpi_id, names.get(kpi_id, kpi_id), 1)


def preview_html(message: EmailMessage) -> str:
    """The HTML body with ``cid:`` images inlined as data URIs, to open in a browser."""
    html_part = message.get_body(preferencelist=("html",))
    if html_part is None:
        raise ValueError("the message has no HTML body")
    html = str(html_part.get_content())
    for part in message.walk():
        cid = part.get("Content-ID")
        if cid and part.get_content_type() == "image/png":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            data = base64.b64encode(payload).decode()
            html = html.replace(f"cid:{cid.strip('<>')}", f"data:image/png;base64,{data}")
    return html
