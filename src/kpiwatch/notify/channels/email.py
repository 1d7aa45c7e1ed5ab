"""The email channel: notices, review digests and the on-call digest over SMTP.

TLS is implicit (``ssl``, port 465) or STARTTLS (default, port 587); the
certificate is always verified. A server that does not offer STARTTLS when it
is required is refused (permanent): sending the password or the message in
clear after a downgrade would be worse than not sending.

Errors say whether a retry may help: connection problems, disconnects and 4xx
replies are retryable; 5xx replies, failed logins and bad certificates are not.
"""

from __future__ import annotations

import smtplib
import ssl as ssl_module
from collections.abc import Sequence
from datetime import datetime
from email.message import EmailMessage
from email.utils import getaddresses

import structlog

from kpiwatch.errors import DeliveryError
from kpiwatch.notify.digest_model import DigestKpi, ReviewDigest
from kpiwatch.notify.notice import Notice
from kpiwatch.notify.render.email import notice_email, review_email

log = structlog.get_logger("kpiwatch.email")


class EmailChannel:
    name = "email"

    def __init__(
        self,
        *,
        host: str,
        port: int = 587,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = True,
        ssl: bool = False,
        sender: str = "kpiwatch@localhost",
        timeout: float = 30.0,
        ssl_context: ssl_module.SSLContext | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._username = username
        self._password = password
        self._starttls = starttls and not ssl
        self._ssl = ssl
        self.sender = sender
        self._timeout = timeout
        self._context = ssl_context

    def send(self, notice: Notice) -> None:
        """Email one notice to its target."""
        self.deliver(notice_email(notice, sender=self.sender))

    def send_batch(self, notices: Sequence[Notice]) -> None:
        """Fold review reminders for one owner into one review email per target."""
        by_target: dict[str, list[DigestKpi]] = {}
        until: dict[str, datetime] = {}
        board: dict[str, str] = {}
        for notice in notices:
            target = notice.message.target
            if notice.kpi is None or notice.state is None:
                continue  # a KPI removed from the rules: nothing left to review
            by_target.setdefault(target, []).append(DigestKpi(
                kpi=notice.kpi, state=notice.state, recent=notice.recent,
                annotations=notice.annotations, ack=notice.ack, url=notice.url,
            ))  # fmt: skip
            until[target] = max(until.get(target, notice.event.at), notice.event.at)
            # a notice links to its KPI's page; the digest links to the board
            board.setdefault(target, notice.url.split("/kpis/", 1)[0].rstrip("/") + "/")
        for target, due in by_target.items():
            digest = ReviewDigest(owner=target, due=tuple(due), until=until[target],
                                  url=board[target])  # fmt: skip
            self.deliver(review_email(digest, sender=self.sender))

    def deliver(self, message: EmailMessage) -> None:
        """Send a rendered message to its To/Cc addresses; raise DeliveryError on failure."""
        headers = [str(v) for v in [*message.get_all("To", []), *message.get_all("Cc", [])]]
        recipients = [address for _, address in getaddresses(headers) if address]
        if not recipients:
            raise DeliveryError("the message has no recipient", channel=self.name,
                                retryable=False)  # fmt: skip
        where = f"{self._host}:{self._port}"
        try:
            with self._connect() as smtp:
                if self._username:
                    smtp.login(self._username, self._password or "")
                refused = smtp.send_message(message, from_addr=self.sender, to_addrs=recipients)
        except DeliveryError:
            raise
        except ssl_module.SSLCertVerificationError as exc:
            raise self._error(
                f"{where}: TLS certificate not trusted ({exc.verify_message}); "
                "fix the server's certificate or install its CA",
                False,
            ) from None
        except ssl_module.SSLError as exc:
            # e.g. ``ssl`` against a STARTTLS port (wrong version number): configuration
            raise self._error(f"{where}: TLS failed: {exc.reason or exc}", False) from None
        except smtplib.SMTPAuthenticationError as exc:
            retryable = 400 <= exc.smtp_code < 500  # 454: temporary authentication failure
            raise self._error(
                f"{where}: login as {self._username!r} failed: "
                f"{exc.smtp_code} {_reply(exc.smtp_error)}",
                retryable,
            ) from None
        except smtplib.SMTPRecipientsRefused as exc:
            codes = {address: reply[0] for address, reply in exc.recipients.items()}
            retryable = all(400 <= code < 500 for code in codes.values())
            refused_text = ", ".join(f"{a} ({c})" for a, c in codes.items())
            raise self._error(f"{where}: recipients refused: {refused_text}", retryable) from None
        except smtplib.SMTPServerDisconnected as exc:
            raise self._error(f"{where}: server disconnected: {exc}", True) from None
        except smtplib.SMTPResponseException as exc:
            retryable = 400 <= exc.smtp_code < 500
            raise self._error(f"{where}: server replied {exc.smtp_code} {_reply(exc.smtp_error)}",
                              retryable) from None  # fmt: skip
        except smtplib.SMTPNotSupportedError as exc:
            raise self._error(f"{where}: {exc}", False) from None
        except smtplib.SMTPException as exc:
            # the rest are protocol mismatches (e.g. no common AUTH mechanism): retrying won't help
            raise self._error(f"{where}: {exc}", False) from None
        except TimeoutError:
            raise self._error(f"{where}: timed out after {self._timeout:g}s", True) from None
        except OSError as exc:  # refused, unreachable, DNS: may pass
            raise self._error(f"{where}: cannot connect: {exc.strerror or exc}", True) from None
        if refused:  # some recipients took it; retrying would send it to them again
            log.warning(
                "email not accepted for some recipients",
                refused={a: r[0] for a, r in refused.items()},
                subject=message["Subject"],
            )

    def _connect(self) -> smtplib.SMTP:
        context = self._context or ssl_module.create_default_context()
        if self._ssl:
            return smtplib.SMTP_SSL(self._host, self._port, timeout=self._timeout,
                                    context=context)  # fmt: skip
        smtp = smtplib.SMTP(self._host, self._port, timeout=self._timeout)
        try:
            if self._starttls:
                smtp.ehlo()
                if not smtp.has_extn("starttls"):
                    raise self._error(
                        f"{self._host}:{self._port} does not offer STARTTLS; refusing to send "
                        "in clear (set KPIWATCH_SMTP_STARTTLS=false only for a trusted relay)",
                        False,
                    )
                smtp.starttls(context=context)
                smtp.ehlo()
        except BaseException:
            smtp.close()
            raise
        return smtp

    def _error(self, message: str, retryable: bool) -> DeliveryError:
        return DeliveryError(message, channel=self.name, retryable=retryable)


def _reply(text: bytes | str) -> str:
    """A server reply, one line and short (it is stored with the message and logged)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    flat = " ".join(text.split())
    return flat[:200]
