"""KPI values from a JSON HTTP API.

Each fetch sends one request (``method``, ``headers``, ``auth``) with the
source's ``params`` updated by the KPI's: in the query string for GET, as a
JSON object body for POST. The KPI's ``query`` is a JMESPath expression
applied to the decoded JSON; see :mod:`kpiwatch.sources.series` for the
shapes it may select (a number, or a series of timestamp/value items).

Time: ``timeout`` bounds the whole fetch, retries included. Every connect and
read is limited to the time left, a retry that would start after the
deadline is not made, and the body is read one socket read at a time so a
server dripping bytes cannot hold the fetch past it.

Retries (urllib3's Retry, ``retries`` times with exponential backoff and the
server's Retry-After): connection failures and HTTP 500/502/503/504. A read
timeout is not retried: the timeout is the budget of the whole fetch.

Messages show the URL as scheme://host/path: query strings often carry keys.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime
from typing import Any, cast

import jmespath
import requests
from requests.auth import HTTPBasicAuth
from urllib3.util import Retry, Timeout

from kpiwatch.config import rules
from kpiwatch.errors import BadValueError, SourceError, SourceTimeout, SourceUnavailable
from kpiwatch.sources import web
from kpiwatch.sources.base import FetchResult, observations_of
from kpiwatch.sources.series import json_points

RETRY_STATUSES = frozenset({500, 502, 503, 504})
_ERROR_BODY = 4 * web.SNIPPET  # bytes of an error body read for its message
# the deadline of the fetch running on this thread, for _DeadlineRetry
_current = threading.local()


class HttpJsonSource:
    """A ``type: http`` source: one pooled session, one request per fetch."""

    def __init__(self, name: str, config: rules.HttpSource, *, backoff_factor: float = 0.5) -> None:
        self.name = name
        self._url = config.url
        self._shown_url = web.shown_url(config.url)
        self._method = config.method
        self._params = dict(config.params)
        self._timeout = config.timeout.total_seconds()
        self._verify = config.verify
        self._max_bytes = config.max_bytes

        retry = _DeadlineRetry(
            total=config.retries,
            connect=config.retries,
            read=False,  # re-raise read timeouts at once (see the module docstring)
            status=config.retries,
            other=0,
            backoff_factor=backoff_factor,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=frozenset({"GET", "POST"}),
            respect_retry_after_header=True,
            raise_on_status=False,  # give back the last 5xx: its body explains it
        )
        self._session = web.new_session(
            accept="application/json",
            pool_maxsize=config.max_concurrency,
            max_retries=retry,
            follow_redirects=config.follow_redirects,
        )
        self._session.headers.update(config.headers)
        if config.auth is not None:
            if config.auth.bearer is not None:
                token = config.auth.bearer.get_secret_value()
                self._session.headers["Authorization"] = f"Bearer {token}"
            else:
                password = config.auth.password
                self._session.auth = HTTPBasicAuth(
                    config.auth.username or "", password.get_secret_value() if password else ""
                )

    def fetch(self, kpi: rules.Kpi, now: datetime) -> FetchResult:
        """Request, decode and select the KPI's value(s); raise SourceError, nothing else."""
        start = time.monotonic()
        try:
            expression = self._compiled(kpi)
            document = self._document(kpi, start)
            result = expression.search(document)
        except SourceError:
            raise
        except jmespath.exceptions.JMESPathError as exc:
            raise self._failed(kpi, f"JMESPath {kpi.query!r} failed: {_first_line(exc)}") from exc
        except Exception as exc:  # any failure becomes a SourceError
            elapsed = time.monotonic() - start
            if elapsed >= self._timeout or web.is_timeout(exc):
                raise self._timed_out(kpi, elapsed) from exc
            raise self._down(
                kpi, f"request to {self._shown_url} failed: {web.describe(exc)}"
            ) from exc
        if result is None:
            raise self._bad(kpi, f"JMESPath {kpi.query!r} matched nothing in the response")
        try:
            points = json_points(result, repr(kpi.query), now)
        except ValueError as exc:
            raise self._bad(kpi, str(exc)) from None
        return FetchResult(observations_of(kpi.id, points), time.monotonic() - start)

    def close(self) -> None:
        """Close the session's pooled connections."""
        self._session.close()

    def _compiled(self, kpi: rules.Kpi) -> Any:
        # compiled on every fetch: jmespath caches parsed expressions itself
        # (0.3 µs a hit, 14 µs a miss), noise next to an HTTP request
        query = kpi.query or ""
        try:
            return jmespath.compile(query)
        except jmespath.exceptions.JMESPathError as exc:
            raise self._failed(kpi, f"invalid JMESPath {query!r}: {_parse_reason(exc)}") from None

    def _document(self, kpi: rules.Kpi, start: float) -> object:
        """The decoded JSON body of a successful response."""
        deadline = start + self._timeout
        params = {**self._params, **kpi.params}
        get = self._method == "GET"
        _current.deadline = deadline
        try:
            response = self._session.request(
                self._method,
                self._url,
                params=params if get else None,
                json=None if get else params,
                # types-requests knows tuples only; requests passes a Timeout through
                timeout=cast(Any, _DeadlineTimeout(self._timeout, deadline)),
                verify=self._verify,
                stream=True,
            )
        except _NoTimeToRetry as exc:
            attempts = f"{exc.attempts} attempt{'s' if exc.attempts > 1 else ''}"
            raise self._down(
                kpi,
                f"request to {self._shown_url} failed: {exc.failure} ({attempts}; "
                f"no time left to retry within the {self._timeout:g}s timeout)",
            ) from None
        finally:
            _current.deadline = None
        with response:
            if response.status_code >= 400:
                body = self._body(kpi, response, start, limit=_ERROR_BODY, strict=False)
                failed = self._down if web.server_side(response.status_code) else self._failed
                raise failed(
                    kpi,
                    f"{self._shown_url} answered {web.status_line(response)}: {web.snippet(body)}",
                )
            body = self._body(kpi, response, start, limit=self._max_bytes, strict=True)
        try:
            return json.loads(body)
        except (ValueError, RecursionError):  # empty, JSONDecodeError, UnicodeDecodeError, deep
            got = web.body_description(web.content_type(response), body)
            raise self._failed(
                kpi, f"response from {self._shown_url}: expected JSON, got {got}"
            ) from None

    def _body(
        self,
        kpi: rules.Kpi,
        response: requests.Response,
        start: float,
        *,
        limit: int,
        strict: bool,
    ) -> bytes:
        """Up to ``limit`` decoded bytes; past it, an error if ``strict``, else cut short."""
        try:
            return web.read_body(
                response, deadline=start + self._timeout, limit=limit, strict=strict
            )
        except web.BodyTimeout as exc:
            raise self._timed_out(kpi, time.monotonic() - start) from exc.__cause__
        except web.BodyTooLarge:
            raise self._too_large(kpi) from None

    def _failed(self, kpi: rules.Kpi, what: str) -> SourceError:
        return SourceError(
            f"query for {kpi.id!r}: {web.scrub_query(what)}", source=self.name, kpi=kpi.id
        )

    def _down(self, kpi: rules.Kpi, what: str) -> SourceUnavailable:
        return SourceUnavailable(
            f"query for {kpi.id!r}: {web.scrub_query(what)}", source=self.name, kpi=kpi.id
        )

    def _bad(self, kpi: rules.Kpi, what: str) -> BadValueError:
        return BadValueError(
            f"query for {kpi.id!r}: {web.scrub_query(what)}", source=self.name, kpi=kpi.id
        )

    def _too_large(self, kpi: rules.Kpi) -> SourceError:
        limit = web.size(self._max_bytes)
        return self._failed(kpi, f"response larger than {limit} limit (max_bytes)")

    def _timed_out(self, kpi: rules.Kpi, elapsed: float) -> SourceTimeout:
        return SourceTimeout(
            f"query for {kpi.id!r}: request to {self._shown_url} timed out after "
            f"{elapsed:.1f}s (timeout {self._timeout:g}s)",
            source=self.name,
            kpi=kpi.id,
        )


class _NoTimeToRetry(Exception):
    """Raised instead of sleeping when the next attempt would start past the deadline."""

    def __init__(self, failure: str, attempts: int) -> None:
        super().__init__(failure)
        self.failure = failure
        self.attempts = attempts


class _DeadlineRetry(Retry):
    """urllib3's Retry, but it never sleeps past the deadline of the fetch in progress."""

    def sleep(self, response: Any = None) -> None:
        deadline: float | None = getattr(_current, "deadline", None)
        if deadline is not None:
            wait = self.get_backoff_time()
            if self.respect_retry_after_header and response is not None:
                wait = self.get_retry_after(response) or wait
            if time.monotonic() + wait >= deadline:
                raise _NoTimeToRetry(self._last_failure(response), len(self.history))
        super().sleep(response)

    def _last_failure(self, response: Any) -> str:
        if response is not None:
            return f"HTTP {response.status}"
        error = self.history[-1].error if self.history else None
        return web.describe(error) if error is not None else "connection failed"


class _DeadlineTimeout(Timeout):
    """Connect and read timeouts that shrink to the time left before the deadline.

    urllib3 clones the Timeout for every attempt; the clone keeps the deadline,
    so a retry gets only what is left of the budget.
    """

    def __init__(self, seconds: float, deadline: float) -> None:
        super().__init__(connect=seconds, read=seconds)
        self._seconds = seconds
        self._deadline = deadline

    def clone(self) -> _DeadlineTimeout:
        return _DeadlineTimeout(self._seconds, self._deadline)

    @property
    def connect_timeout(self) -> float:
        return self._left()

    @property
    def read_timeout(self) -> float:
        return self._left()

    def _left(self) -> float:
        # never 0: urllib3 and sockets read 0 as "non-blocking", not "expired"
        return max(min(self._seconds, self._deadline - time.monotonic()), 0.001)


def _parse_reason(exc: Exception) -> str:
    if isinstance(exc, jmespath.exceptions.IncompleteExpressionError):
        return "incomplete expression"
    if isinstance(exc, jmespath.exceptions.LexerError):
        return f"{exc.message} at column {exc.lexer_position}"
    if isinstance(exc, jmespath.exceptions.ParseError):
        return f"{exc.msg} at column {exc.lex_position}"
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).splitlines()
    return lines[0] if lines else type(exc).__name__
