"""The email channel against a real SMTP server (aiosmtpd): delivery, TLS, AUTH, failures."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from smtp_server import SmtpServer, running_smtp, smtp_server

from kpiwatch.config.rules import Kpi, Target, Thresholds
from kpiwatch.errors import DeliveryError
from kpiwatch.model import (
    DeliveryState,
    Direction,
    Event,
    EventKind,
    KpiState,
    Observation,
    OutboxMessage,
    ReviewCadence,
    Status,
)
from kpiwatch.notify.channels.email import EmailChannel
from kpiwatch.notify.digest_model import OncallDigest
from kpiwatch.notify.notice import Notice
from kpiwatch.notify.render.email import oncall_email

__all__ = ["smtp_server"]  # the fixture, imported for pytest

NOW = datetime(2024, 6, 3, 8, 0, tzinfo=UTC)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TO = "ana@example.com"


def notice(kind: EventKind = EventKind.STATUS_CHANGED, kpi_id: str = "churn_rate",
           name: str = "Monthly churn rate", target: str = TO) -> Notice:  # fmt: skip
    kpi = Kpi(id=kpi_id, name=name, owner=TO, unit="%", direction=Direction.LOWER_IS_BETTER,
              source="push", thresholds=Thresholds(yellow=5.5, red=6.0),
              target=Target(value=4.0))  # fmt: skip
    data: dict[str, object] = {"from": "yellow", "to": "red", "value": 6.21,
                               "reasons": ["6.21 % is above red 6 %"]}  # fmt: skip
    if kind is EventKind.REVIEW_DUE:
        data = {"cadence": "monthly", "escalated": False, "status": "red", "value": 6.21}
    event = Event(kind=kind, key=f"{kind}:{kpi_id}", at=NOW, kpi_id=kpi_id, data=data)
    state = KpiState(kpi_id=kpi_id, status=Status.RED, since=NOW, review=ReviewCadence.MONTHLY,
                     value=6.21, reasons=("6.21 % is above red 6 %",))  # fmt: skip
    recent = tuple(Observation(kpi_id, NOW - timedelta(days=9 - i), 5 + 0.15 * i)
                   for i in range(10))  # fmt: skip
    return Notice(
        message=OutboxMessage(1, event, "email", target, DeliveryState.PENDING, 0, NOW, NOW),
        kpi=kpi, team=None, state=state, recent=recent, annotations=(), ack=None,
        url=f"https://kpi.example.com/kpis/{kpi_id}",
    )  # fmt: skip


def channel(server: SmtpServer, **options: object) -> EmailChannel:
    settings: dict[str, object] = {"host": server.host, "port": server.port, "starttls": False,
                                   "sender": "kpiwatch@example.com", "timeout": 5.0}  # fmt: skip
    settings.update(options)
    return EmailChannel(**settings)  # type: ignore[arg-type]


def fails(call: Callable[[], object], *, retryable: bool) -> DeliveryError:
    with pytest.raises(DeliveryError) as info:
        call()
    assert info.value.retryable is retryable, str(info.value)
    assert info.value.channel == "email"
    return info.value


# ---------------------------------------------------------------- content


def test_red_notice_arrives_with_text_html_and_inline_chart(smtp_server: SmtpServer) -> None:
    channel(smtp_server).send(notice(name="<script>x</script> churn"))
    [message] = smtp_server.messages
    assert smtp_server.envelopes == [("kpiwatch@example.com", [TO])]
    subject = "[kpiwatch] 🔴 <script>x</script> churn is red: 6.21 % (was yellow)"
    assert message["Subject"] == subject
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None
    assert html is not None
    assert "6.21 %" in text.get_content()
    html_text = html.get_content()
    assert "&lt;script&gt;x&lt;/script&gt; churn" in html_text
    assert "<script>" not in html_text
    [image] = [p for p in message.walk() if p.get_content_type() == "image/png"]
    assert f"cid:{image['Content-ID'].strip('<>')}" in html_text
    assert image.get_content().startswith(PNG_MAGIC)


def test_review_batch_is_one_email_listing_every_kpi(smtp_server: SmtpServer) -> None:
    names = ["Alpha", "Beta", "Gamma"]
    batch = [notice(EventKind.REVIEW_DUE, f"k{i}", n) for i, n in enumerate(names)]
    channel(smtp_server).send_batch(batch)
    [message] = smtp_server.messages
    assert message["Subject"] == "[kpiwatch] 3 KPIs due for review (3 red)"
    assert message["To"] == TO
    text = message.get_body(preferencelist=("plain",))
    assert text is not None
    assert all(name in text.get_content() for name in names)
    assert "https://kpi.example.com/" in text.get_content()
    assert sum(p.get_content_type() == "image/png" for p in message.walk()) == 3


def test_oncall_digest_goes_to_every_address(smtp_server: SmtpServer) -> None:
    digest = OncallDigest(since=None, until=NOW, attention=(), transitions=(), escalations=(),
                          source_problems=(), dead=(), url="https://kpi.example.com/")  # fmt: skip
    to = ["a@example.com", "b@example.com"]
    channel(smtp_server).deliver(oncall_email(digest, sender="kpiwatch@example.com", to=to))
    assert smtp_server.envelopes == [("kpiwatch@example.com", to)]
    subject = smtp_server.messages[0]["Subject"]
    assert subject == "[kpiwatch] on-call digest: nothing needs attention"


# ---------------------------------------------------------------- TLS and AUTH


@pytest.fixture
def tls_server() -> Iterator[SmtpServer]:
    with running_smtp(starttls=True, users={"kw": "s3cret-pw"}, auth_require_tls=True) as server:
        yield server


def test_starttls_and_login_with_a_trusted_ca(tls_server: SmtpServer) -> None:
    channel(tls_server, starttls=True, username="kw", password="s3cret-pw",
            ssl_context=tls_server.client_context()).send(notice())  # fmt: skip
    assert len(tls_server.messages) == 1
    assert tls_server.logins == ["kw"]


def test_an_untrusted_certificate_fails_permanently(tls_server: SmtpServer) -> None:
    default_context = channel(tls_server, starttls=True)  # trusts the system CAs only
    error = fails(lambda: default_context.send(notice()), retryable=False)
    assert "certificate" in str(error)
    assert tls_server.messages == []


def test_a_wrong_password_fails_permanently_without_showing_it(tls_server: SmtpServer) -> None:
    sender = channel(tls_server, starttls=True, username="kw", password="wrong-pw",
                     ssl_context=tls_server.client_context())  # fmt: skip
    error = fails(lambda: sender.send(notice()), retryable=False)
    assert "535" in str(error)
    assert "'kw'" in str(error)
    assert "wrong-pw" not in str(error)


def test_a_server_without_starttls_is_refused(smtp_server: SmtpServer) -> None:
    error = fails(lambda: channel(smtp_server, starttls=True).send(notice()), retryable=False)
    assert "STARTTLS" in str(error)
    assert smtp_server.messages == []


def test_implicit_tls() -> None:
    with running_smtp(implicit_tls=True) as server:
        channel(server, ssl=True, ssl_context=server.client_context()).send(notice())
        assert len(server.messages) == 1


# ---------------------------------------------------------------- failures


def test_server_down_is_retryable_and_works_after_restart(smtp_server: SmtpServer) -> None:
    sender = channel(smtp_server)
    smtp_server.stop()
    error = fails(lambda: sender.send(notice()), retryable=True)
    assert "cannot connect" in str(error)
    smtp_server.start()
    sender.send(notice())
    assert len(smtp_server.messages) == 1


def test_a_451_on_rcpt_is_retryable(smtp_server: SmtpServer) -> None:
    smtp_server.rcpt_replies[TO] = "451 4.3.0 try again later"
    error = fails(lambda: channel(smtp_server).send(notice()), retryable=True)
    assert "451" in str(error)


def test_a_550_on_rcpt_is_permanent(smtp_server: SmtpServer) -> None:
    smtp_server.rcpt_replies[TO] = "550 5.1.1 no such user"
    error = fails(lambda: channel(smtp_server).send(notice()), retryable=False)
    assert "550" in str(error)
