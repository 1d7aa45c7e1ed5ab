"""The email renderer: charts, templates, MIME structure, subjects, escaping."""

from __future__ import annotations

import dataclasses
import io
from datetime import UTC, date, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest
from PIL import Image

from kpiwatch.config.rules import Kpi, Target, Thresholds
from kpiwatch.model import (
    Ack,
    Annotation,
    DeliveryState,
    Direction,
    Event,
    EventKind,
    KpiState,
    Observation,
    OutboxMessage,
    ReviewCadence,
    Status,
    StatusChange,
)
from kpiwatch.notify.digest_model import DigestKpi, OncallDigest, ReviewDigest
from kpiwatch.notify.notice import Notice
from kpiwatch.notify.render.chart import trend_chart
from kpiwatch.notify.render.email import notice_email, oncall_email, preview_html, review_email

NOW = datetime(2024, 6, 3, 8, 0, tzinfo=UTC)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_kpi(kpi_id: str = "churn_rate", name: str = "Monthly churn rate") -> Kpi:
    return Kpi(
        id=kpi_id, name=name, owner="ana@example.com", unit="%",
        direction=Direction.LOWER_IS_BETTER, source="push",
        thresholds=Thresholds(yellow=5.5, red=6.0),
        target=Target(value=4.0, by=date(2024, 12, 31)),
    )  # fmt: skip


def make_state(kpi_id: str, status: Status, value: float) -> KpiState:
    return KpiState(
        kpi_id=kpi_id, status=status, since=NOW - timedelta(days=2), review=ReviewCadence.WEEKLY,
        value=value, reasons=(f"{value} % is above red 6 %",),
        escalated_since=NOW - timedelta(days=1), next_review=NOW + timedelta(days=7),
    )  # fmt: skip


def recent(kpi_id: str, n: int = 30) -> tuple[Observation, ...]:
    return tuple(Observation(kpi_id, NOW - timedelta(days=n - i), 4.5 + 0.06 * i) for i in range(n))


def make_notice(kpi: Kpi | None = None, kind: EventKind = EventKind.STATUS_CHANGED,
                target: str = "ana@example.com") -> Notice:  # fmt: skip
    kpi = kpi or make_kpi()
    data = {"from": "yellow", "to": "red", "value": 6.21, "unit": "%",
            "reasons": ["6.21 % is above red 6 %"]}  # fmt: skip
    if kind is EventKind.REVIEW_DUE:
        data = {"cadence": "weekly", "escalated": True, "status": "red", "value": 6.21,
                "reasons": ["6.21 % is above red 6 %"]}  # fmt: skip
    event = Event(kind=kind, key=f"{kind}:{kpi.id}", at=NOW, kpi_id=kpi.id, data=data)
    message = OutboxMessage(id=1, event=event, channel="email", target=target,
                            state=DeliveryState.PENDING, attempts=0, next_attempt_at=NOW,
                            created_at=NOW)  # fmt: skip
    return Notice(
        message=message, kpi=kpi, team=None, state=make_state(kpi.id, Status.RED, 6.21),
        recent=recent(kpi.id),
        annotations=(Annotation(1, kpi.id, NOW, "price change <b>v2</b>", "bo", NOW),),
        ack=Ack(1, kpi.id, NOW - timedelta(days=2), "ana", "looking into it", NOW),
        url=f"https://kpi.example.com/kpis/{kpi.id}",
    )  # fmt: skip


def digest_kpi(kpi: Kpi, status: Status, value: float) -> DigestKpi:
    return DigestKpi(
        kpi=kpi,
        state=make_state(kpi.id, status, value),
        recent=recent(kpi.id),
        annotations=(),
        ack=None,
        url=f"https://kpi.example.com/kpis/{kpi.id}",
    )


def empty_oncall(**changes: object) -> OncallDigest:
    base: dict[str, object] = {
        "since": NOW - timedelta(days=1), "until": NOW, "attention": (), "transitions": (),
        "escalations": (), "source_problems": (), "dead": (), "url": "https://kpi.example.com/",
    }  # fmt: skip
    base.update(changes)
    return OncallDigest(**base)  # type: ignore[arg-type]


def parts(message: EmailMessage) -> tuple[str, str, list[EmailMessage]]:
    """(text, html, image parts) after a round trip through bytes, as a client sees it."""
    parsed = message_from_bytes(message.as_bytes(), policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    text = parsed.get_body(preferencelist=("plain",))
    html = parsed.get_body(preferencelist=("html",))
    assert text is not None
    assert html is not None
    images = [p for p in parsed.walk() if p.get_content_type() == "image/png"]
    return text.get_content(), html.get_content(), images


# ---------------------------------------------------------------- chart


def _image(png: bytes) -> Image.Image:
    assert png.startswith(PNG_MAGIC)
    return Image.open(io.BytesIO(png))


def test_chart_is_a_png_of_the_asked_size_and_deterministic() -> None:
    values = [(o.observed_at, o.value) for o in recent("x")]
    glide = ((NOW - timedelta(days=30), 5.0), (NOW + timedelta(days=90), 4.0))
    png = trend_chart(values, thresholds={"yellow": 5.5, "red": 6.0}, target=4.0, glide=glide)
    assert _image(png).size == (560, 180)
    assert png == trend_chart(values, thresholds={"yellow": 5.5, "red": 6.0}, target=4.0,
                              glide=glide)  # fmt: skip
    small = trend_chart(values, thresholds={}, target=None, width=280, height=70)
    assert _image(small).size == (280, 70)


@pytest.mark.parametrize(
    "values",
    [
        [],
        [(NOW, 5.0)],
        [(NOW - timedelta(days=1), 5.0), (NOW, 5.0)],  # constant
        [(NOW, 0.0), (NOW, 0.0)],  # same time, zero
        [(NOW - timedelta(days=1), float("nan")), (NOW, 1e12)],
    ],
)
def test_chart_edge_cases_still_draw(values: list[tuple[datetime, float]]) -> None:
    assert _image(trend_chart(values, thresholds={"red": 6.0}, target=None)).size == (560, 180)


def test_chart_draws_threshold_colours() -> None:
    values = [(NOW - timedelta(days=1), 1.0), (NOW, 2.0)]
    image = _image(trend_chart(values, thresholds={"red": 1.5}, target=None)).convert("RGB")
    colours = [c for _, c in image.getcolors(maxcolors=100_000) or []]
    assert any(
        isinstance(c, tuple) and c[0] > 180 and c[1] < 90 and c[2] < 80 for c in colours
    )  # the red dashes


def test_chart_refuses_a_useless_size() -> None:
    with pytest.raises(ValueError, match="too small"):
        trend_chart([], thresholds={}, target=None, width=10, height=10)


# ---------------------------------------------------------------- notice


def test_red_notice_subject_structure_and_inline_chart() -> None:
    message = notice_email(make_notice(), sender="kpiwatch@example.com")
    assert message["Subject"] == "[kpiwatch] 🔴 Monthly churn rate is red: 6.21 % (was yellow)"
    assert message["To"] == "ana@example.com"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message.get_content_type() == "multipart/alternative"
    text, html, images = parts(message)
    assert "6.21 %" in text
    assert "target 4 % by 2024-12-31" in text
    assert "looking into it" in text
    assert "https://kpi.example.com/kpis/churn_rate" in text
    assert "escalated since" in text
    assert "6.21 % is above red 6 %" in text
    [image] = images
    cid = image["Content-ID"].strip("<>")
    assert f'src="cid:{cid}"' in html
    assert image.get_content().startswith(PNG_MAGIC)
    assert "max-width:600px" in html
    assert "#d93025" in html
    assert "<link" not in html
    assert "<script" not in html


def test_html_escapes_names_and_annotations_text_does_not() -> None:
    notice = make_notice(make_kpi(name="<script>alert(1)</script> & co"))
    text, html, _ = parts(notice_email(notice, sender="kpiwatch@example.com"))
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in html
    assert "price change &lt;b&gt;v2&lt;/b&gt;" in html
    assert "<script>alert(1)</script> & co" in text  # plain text is not HTML


def test_newlines_in_names_cannot_inject_headers() -> None:
    notice = make_notice(make_kpi(name="Churn\r\nBcc: victim@example.com"),
                         target="ana@example.com\nBcc: x@example.com")  # fmt: skip
    message = notice_email(notice, sender="kpiwatch@example.com")
    parsed = message_from_bytes(message.as_bytes(), policy=policy.default)
    assert parsed["Bcc"] is None
    assert sorted(parsed.keys()) == sorted(message.keys())
    assert "\n" not in message["Subject"]


def test_data_incident_notice_names_every_kpi_and_has_no_chart() -> None:
    event = Event(kind=EventKind.DATA_INCIDENT, key="s", at=NOW, source="warehouse",
                  data={"reason": "connection refused", "count": 3,
                        "kpis": ["churn", "mrr", "nps"]})  # fmt: skip
    base = make_notice()
    notice = Notice(message=OutboxMessage(1, event, "email", "oncall@example.com",
                                          DeliveryState.PENDING, 0, NOW, NOW),
                    kpi=None, team=None, state=None, recent=(), annotations=(), ack=None,
                    url="https://kpi.example.com/")  # fmt: skip
    assert base.kpi is not None
    message = notice_email(notice, sender="kpiwatch@example.com")
    assert message["Subject"] == (
        "[kpiwatch] 🚫 data incident on source warehouse: connection refused; "
        "3 KPIs blind: churn, mrr, nps"
    )
    text, html, images = parts(message)
    assert images == []
    assert "connection refused" in text
    assert "warehouse" in html


# ---------------------------------------------------------------- digests


def test_review_digest_lists_each_kpi_worst_first_with_a_chart_each() -> None:
    due = (
        digest_kpi(make_kpi("a", "Alpha"), Status.GREEN, 4.2),
        digest_kpi(make_kpi("b", "Beta"), Status.RED, 6.3),
        digest_kpi(make_kpi("c", "Gamma"), Status.YELLOW, 5.6),
    )
    digest = ReviewDigest(owner="ana@example.com", due=due, until=NOW, url="https://k/")
    message = review_email(digest, sender="kpiwatch@example.com")
    assert message["Subject"] == "[kpiwatch] 3 KPIs due for review (1 red)"
    assert message["To"] == "ana@example.com"
    text, html, images = parts(message)
    assert text.index("Beta") < text.index("Gamma") < text.index("Alpha")
    assert len(images) == 3
    for image in images:
        assert f"cid:{image['Content-ID'].strip('<>')}" in html


def test_oncall_digest_counts_attention_and_dead() -> None:
    dead_event = Event(kind=EventKind.STATUS_CHANGED, key="k", at=NOW, kpi_id="b")
    dead = OutboxMessage(7, dead_event, "slack", "#kpis", DeliveryState.DEAD, 9, NOW, NOW,
                         last_error="slack: channel_not_found")  # fmt: skip
    digest = empty_oncall(
        attention=(digest_kpi(make_kpi("c", "Gamma"), Status.YELLOW, 5.6),
                   digest_kpi(make_kpi("b", "Beta"), Status.RED, 6.3)),
        transitions=(StatusChange("b", NOW, Status.YELLOW, Status.RED, 6.3),),
        dead=(dead,),
    )  # fmt: skip
    message = oncall_email(digest, sender="kpiwatch@example.com", to=["a@x.org", "b@x.org"])
    assert message["Subject"] == "[kpiwatch] on-call digest: 1 red, 1 yellow, 1 undelivered"
    assert message["To"] == "a@x.org, b@x.org"
    text, html, images = parts(message)
    assert text.index("Beta") < text.index("Gamma")
    assert "channel_not_found" in text
    assert "channel_not_found" in html
    assert "Beta: yellow → red" in text
    assert len(images) == 2
    assert "Nothing needs attention" not in text


def test_quiet_oncall_digest_says_so() -> None:
    message = oncall_email(empty_oncall(), sender="kpiwatch@example.com", to=["a@x.org"])
    assert message["Subject"] == "[kpiwatch] on-call digest: nothing needs attention"
    text, html, images = parts(message)
    assert "Nothing needs attention" in text
    assert "Nothing needs attention" in html
    assert images == []


def test_preview_inlines_the_charts() -> None:
    html = preview_html(notice_email(make_notice(), sender="kpiwatch@example.com"))
    assert "cid:" not in html
    assert "data:image/png;base64," in html


# ---------------------------------------------------------------- a plan per period


def planned_kpi() -> Kpi:
    return Kpi.model_validate({
        "id": "revenue", "name": "Monthly revenue", "owner": "sam@example.com", "unit": "$",
        "direction": "higher_is_better", "source": "push", "period": "month",
        "aggregate": "sum", "target": {"plan": {"2024-05": 33000}},
        "thresholds": {"yellow": "95%", "red": "90%"},
    })  # fmt: skip


def test_a_plan_is_the_target_and_percent_thresholds_are_no_lines_on_the_chart() -> None:
    kpi = planned_kpi()
    base = make_notice(kpi)
    assert base.state is not None
    notice = dataclasses.replace(base, state=base.state._replace(plan=33000.0))
    text, html, [image] = parts(notice_email(notice, sender="kpiwatch@example.com"))
    assert "target 33,000 $ (monthly plan)" in text
    assert "thresholds yellow 95 % of plan (31,350 $), red 90 % of plan (29,700 $)" in text
    assert "yellow 95 % of plan (31,350 $), red 90 % of plan (29,700 $)" in html
    # the chart: the values alone; 95 and 90 are no levels in $
    values = [(o.observed_at, o.value) for o in notice.recent]
    plain = trend_chart(values, thresholds={}, target=None, width=560, height=180)
    assert image.get_content() == plain
    drawn = trend_chart(values, thresholds={"yellow": 95.0, "red": 90.0}, target=None,
                        width=560, height=180)  # fmt: skip
    assert drawn != plain


def test_a_digest_words_the_plan_of_each_kpis_judged_period() -> None:
    item = digest_kpi(planned_kpi(), Status.YELLOW, 31000.0)
    assert item.state is not None
    item = dataclasses.replace(item, state=item.state._replace(plan=33000.0))
    unplanned = digest_kpi(planned_kpi(), Status.GREEN, 5.0)  # no plan for its month
    digest = ReviewDigest(owner="sam@example.com", due=(item, unplanned), until=NOW,
                          url="https://k/")  # fmt: skip
    text, _, _ = parts(review_email(digest, sender="kpiwatch@example.com"))
    assert "target 33,000 $ (monthly plan)" in text
    assert "thresholds yellow 95 % of plan (31,350 $), red 90 % of plan (29,700 $)" in text
    assert "target no monthly plan for the month judged" in text
    assert "thresholds yellow 95 % of plan, red 90 % of plan (higher is better)" in text
