"""Fakes for users' tests and ours: a clock you set, a source you fill, a recording channel,
and a raw HTTP client that sees what a server answers while it refuses a body.

Prefer these to ``mock.Mock``: tests then assert on outcomes (what was
delivered, what was stored), not on calls.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from kpiwatch.config.loader import load_rule_text
from kpiwatch.config.rules import Kpi
from kpiwatch.errors import DeliveryError, SourceError
from kpiwatch.model import Observation
from kpiwatch.notify.notice import Notice
from kpiwatch.notify.routing import Router
from kpiwatch.runtime.workspace import Workspace
from kpiwatch.sources.base import FetchResult, Source
from kpiwatch.sources.formula import FormulaSource
from kpiwatch.sources.push import PushSource


class FixedClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 5, 8, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> datetime:
        self._now += delta
        return self._now

    def set(self, moment: datetime) -> None:
        self._now = moment


class FakeSource:
    """A source whose next answer a test sets: a value, a series, or an error."""

    def __init__(self, name: str = "fake") -> None:
        self.name = name
        self._values: dict[str, float | list[tuple[datetime, float]] | SourceError] = {}
        self.fetches: list[str] = []

    def set(self, kpi_id: str, value: float | list[tuple[datetime, float]] | SourceError) -> None:
        self._values[kpi_id] = value

    def fetch(self, kpi: Kpi, now: datetime) -> FetchResult:
        self.fetches.append(kpi.id)
        value = self._values.get(
            kpi.id, SourceError("no value set in FakeSource", source=self.name)
        )
        if isinstance(value, SourceError):
            raise value
        if isinstance(value, list):
            points = tuple(Observation(kpi.id, at, v) for at, v in sorted(value))
        else:
            points = (Observation(kpi.id, now, float(value)),)
        return FetchResult(points, 0.0)

    def close(self) -> None:
        pass


class RecordingChannel:
    """A channel that keeps what it was given; ``fail`` makes the next sends raise."""

    def __init__(self, name: str = "log") -> None:
        self.name = name
        self.sent: list[Notice] = []
        self._fail: Callable[[Notice], DeliveryError | None] | None = None
        self._lock = threading.Lock()

    def fail_with(self, decide: Callable[[Notice], DeliveryError | None] | None) -> None:
        self._fail = decide

    def send(self, notice: Notice) -> None:
        error = self._fail(notice) if self._fail else None
        if error is not None:
            raise error
        with self._lock:
            self.sent.append(notice)


def fake_workspace(
    rules_yaml: str,
    latest: Callable[[str], Observation | None],
    sources: Mapping[str, Source],
    *,
    channels: frozenset[str] | None = None,
) -> Workspace:
    """A workspace over rules given as YAML text, reading the given (fake) sources.

    The built-in ``formula`` and ``push`` sources are added, reading ``latest``
    (normally ``store.latest``), so formulas and pushes work as in the daemon.
    """
    loaded = load_rule_text(rules_yaml, "rules.yaml")
    builtin: dict[str, Source] = {"formula": FormulaSource(latest), "push": PushSource(latest)}
    router = Router(loaded.rules) if channels is None else Router(loaded.rules, channels=channels)
    return Workspace(loaded, {**sources, **builtin}, router)


# ---------------------------------------------------------------- a raw HTTP client


@dataclass(frozen=True)
class RawAnswer:
    """What a server said to :func:`raw_request`; ``status`` is None when it said nothing
    within the timeout (e.g. it waits for a body it wants to read)."""

    status: int | None
    headers: dict[str, str]
    body: bytes
    sent: int  # body bytes the server took before it answered or hung up


def chunked(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """``Transfer-Encoding: chunked`` framing of ``chunks``."""
    for chunk in chunks:
        if chunk:
            yield b"%x\r\n%s\r\n" % (len(chunk), chunk)
    yield b"0\r\n\r\n"


def raw_request(
    address: tuple[str, int],
    head: bytes,
    body: Iterable[bytes] = (),
    timeout: float = 10.0,
    *,
    push_on: bool = False,
) -> RawAnswer:
    """Sends ``head`` (request line and headers), then ``body`` chunk by chunk, but stops
    sending as soon as the server answers or hangs up, as a careful client does (with
    ``push_on``, only when it hangs up, as a hostile one does); then reads the answer. A
    reset or broken pipe is not an error: the answer may be there. (httpx and requests
    cannot say what a server sent while it refused the body.)"""
    deadline = time.monotonic() + timeout
    sent = 0
    with socket.create_connection(address, timeout=timeout) as sock:
        try:
            sock.sendall(head)
            sock.setblocking(False)
            for chunk in body:
                view = memoryview(chunk)
                while view and not _answered(sock, deadline, push_on):
                    count = sock.send(view)
                    sent, view = sent + count, view[count:]
                if view:
                    break
        except (BrokenPipeError, ConnectionResetError, BlockingIOError):
            pass
        return _read_answer(sock, deadline, sent)


def _answered(sock: socket.socket, deadline: float, push_on: bool) -> bool:
    """Waits until the socket can be written (False) or the server said something (True)."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return True  # out of time: stop sending and read what there is
        readable, writable, _ = select.select([] if push_on else [sock], [sock], [], remaining)
        if readable:
            return True
        if writable:
            return False


def _read_answer(sock: socket.socket, deadline: float, sent: int) -> RawAnswer:
    sock.setblocking(True)
    data = b""
    length: int | None = None
    while True:
        head, separator, rest = data.partition(b"\r\n\r\n")
        if separator and length is not None and len(rest) >= length:
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        sock.settimeout(remaining)
        try:
            received = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not received:
            break
        data += received
        head, separator, rest = data.partition(b"\r\n\r\n")
        if separator and length is None:
            length = _content_length(head)
    head, separator, rest = data.partition(b"\r\n\r\n")
    if not separator:
        return RawAnswer(None, {}, b"", sent)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawAnswer(int(status_line.split()[1]), headers, rest, sent)


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0
