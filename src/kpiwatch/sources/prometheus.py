"""KPI values from a Prometheus server's HTTP API (PromQL).

Each fetch runs the KPI's ``query`` as an instant query at ``now``
(``/api/v1/query``). It must give a scalar or exactly one series: several
series are a missing aggregation, and none is "no data" (BadValueError).

With the KPI's ``range`` set, the fetch also runs a range query
(``/api/v1/query_range``) over ``[now - range, now]`` so the history fills
at once; that result must be one series too. The step is the source's
``step``, else ``range / 500`` but at least one minute, in whole seconds.
:meth:`PrometheusQuerySource.fetch_range` (backfill) uses the same step and
splits long windows into requests of at most 11,000 points, Prometheus' limit.

Points of the range history that are NaN or ±Inf (a 0/0 ratio at night) are
left out, as Prometheus leaves out steps without data; the instant value,
the current one, must be a finite number.

``timeout`` bounds the whole fetch (both queries) and is also passed to
Prometheus, which then stops evaluating a query nobody waits for.

Messages show the URL as scheme://host[:port]/path and never a header.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from urllib3.exceptions import MaxRetryError

from kpiwatch.config import rules
from kpiwatch.errors import BadValueError, SourceError, SourceTimeout, SourceUnavailable
from kpiwatch.sources import web
from kpiwatch.sources.base import FetchResult, observations_of
from kpiwatch.sources.values import to_utc

MAX_POINTS = 11_000  # per series and request: Prometheus refuses a finer resolution
MIN_STEP = timedelta(minutes=1)
_SHOWN_SERIES = 3  # label sets named when a query gives several series
_ONE_SERIES = "an instant query must give a scalar or exactly one series"

Point = tuple[datetime, float]


class PrometheusQuerySource:
    """A ``type: prometheus`` source: one pooled session, PromQL per KPI."""

    def __init__(self, name: str, config: rules.PrometheusSource) -> None:
        self.name = name
        parts = urlsplit(config.url)
        # the API paths go after the URL's path (a prefix behind a proxy); a query
        # string in the URL (e.g. a tenant) is sent along with every request
        self._base = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
        self._extra = parse_qsl(parts.query)
        self._shown_url = web.shown_url(self._base)
        self._timeout = config.timeout.total_seconds()
        self._step = config.step
        self._session = web.new_session(
            accept="application/json",
            pool_maxsize=config.max_concurrency,
            follow_redirects=config.follow_redirects,
        )
        self._session.headers.update(config.headers)  # values never reach a message

    def fetch(self, kpi: rules.Kpi, now: datetime) -> FetchResult:
        """The instant value at ``now``, after the ``range`` history if the KPI has one.

        Raises SourceError (or a subclass), nothing else.
        """
        start = time.monotonic()
        deadline = start + self._timeout
        now = self._utc(kpi, now)
        data = self._call(kpi, "query", {"time": _epoch(now)}, deadline)
        current = self._instant(kpi, data)
        points = [current]
        if kpi.range is not None:
            history = self._history(kpi, now - kpi.range, now, deadline)
            # the instant value is the current one: keep history only up to it
            points = [p for p in history if p[0] < current[0]] + points
        return FetchResult(observations_of(kpi.id, points), time.monotonic() - start)

    def fetch_range(self, kpi: rules.Kpi, start: datetime, end: datetime) -> FetchResult:
        """The KPI's series from ``start`` to ``end`` (for backfill), oldest first.

        Uses the step of :meth:`fetch`'s range query; every request of a long
        window gets the full ``timeout``. Raises SourceError, nothing else.
        """
        began = time.monotonic()
        start = self._utc(kpi, start)
        end = self._utc(kpi, end)
        if end < start:
            raise self._failed(kpi, f"range end {end:%Y-%m-%d %H:%M:%S} is before its start")
        points = self._history(kpi, start, end, None)
        if not points:
            raise self._bad(
                kpi,
                f"PromQL {kpi.query!r} returned no finite values between "
                f"{start:%Y-%m-%d %H:%M:%S} and {end:%Y-%m-%d %H:%M:%S} UTC",
            )
        return FetchResult(observations_of(kpi.id, points), time.monotonic() - began)

    def step_for(self, kpi: rules.Kpi) -> timedelta:
        """The range-query step: the source's ``step``, else range/500 (at least 1m)."""
        if self._step is not None:
            step = self._step
        elif kpi.range is not None:
            step = max(MIN_STEP, kpi.range / 500)
        else:
            step = MIN_STEP
        return timedelta(seconds=max(1, round(step.total_seconds())))

    def close(self) -> None:
        """Close the session's pooled connections."""
        self._session.close()

    # ------------------------------------------------------------ results

    def _instant(self, kpi: rules.Kpi, data: Mapping[str, Any]) -> Point:
        kind, result = data.get("resultType"), data.get("result")
        if kind == "scalar":
            return self._sample(kpi, result)
        if kind == "vector" and isinstance(result, list):
            return self._sample(kpi, self._only_series(kpi, result).get("value"))
        if kind == "matrix":
            raise self._failed(
                kpi,
                f"PromQL {kpi.query!r} returned a range vector; {_ONE_SERIES} "
                "(drop the [duration] selector or wrap it, e.g. in avg_over_time())",
            )
        if kind == "string":
            raise self._failed(kpi, f"PromQL {kpi.query!r} returned a string; {_ONE_SERIES}")
        raise self._failed(kpi, f"unexpected result from {self._shown_url}: {web.snippet(data)}")

    def _history(
        self, kpi: rules.Kpi, start: datetime, end: datetime, deadline: float | None
    ) -> list[Point]:
        """The range query over [start, end], in requests of at most MAX_POINTS points."""
        step = self.step_for(kpi)
        points: list[Point] = []
        chunk_start = start
        while chunk_start <= end:
            chunk_end = min(end, chunk_start + step * (MAX_POINTS - 1))
            params = {
                "start": _epoch(chunk_start),
                "end": _epoch(chunk_end),
                "step": f"{int(step.total_seconds())}s",
            }
            data = self._call(kpi, "query_range", params, deadline)
            result = data.get("result")
            if data.get("resultType") != "matrix" or not isinstance(result, list):
                raise self._failed(
                    kpi, f"unexpected range result from {self._shown_url}: {web.snippet(data)}"
                )
            # an empty window (before the metric existed) is fine; several series are not
            if result:
                values = self._only_series(kpi, result).get("values")
                if not isinstance(values, list):
                    raise self._failed(
                        kpi, f"unexpected range result from {self._shown_url}: {web.snippet(data)}"
                    )
                for pair in values:
                    at, value = self._point(kpi, pair)
                    if math.isfinite(value):
                        points.append((at, value))
            chunk_start = chunk_end + step
        return points

    def _only_series(self, kpi: rules.Kpi, series: list[Any]) -> Mapping[str, Any]:
        if not series:
            raise self._bad(kpi, f"PromQL {kpi.query!r} returned no series")
        if len(series) > 1:
            shown = ", ".join(_label_sets(series[:_SHOWN_SERIES], series))
            more = ", …" if len(series) > _SHOWN_SERIES else ""
            query = kpi.query or ""
            example = f"sum({query})" if len(query) <= 60 else "sum(...)"
            raise self._failed(
                kpi,
                f"PromQL {query!r} returned {len(series)} series, expected one: "
                f"{shown}{more}; aggregate them, e.g. {example}",
            )
        only = series[0]
        if not isinstance(only, dict):
            raise self._failed(
                kpi, f"unexpected series from {self._shown_url}: {web.snippet(only)}"
            )
        return only

    def _sample(self, kpi: rules.Kpi, pair: object) -> Point:
        at, value = self._point(kpi, pair)
        if not math.isfinite(value):
            raise self._bad(
                kpi, f"PromQL {kpi.query!r} returned {_prom_number(value)}, not a finite number"
            )
        return at, value

    def _point(self, kpi: rules.Kpi, pair: object) -> Point:
        """A [timestamp, "value"] pair: epoch seconds and the value as text."""
        try:
            if not isinstance(pair, list) or len(pair) != 2 or not isinstance(pair[1], str):
                raise ValueError
            at = datetime.fromtimestamp(float(pair[0]), UTC)
            return at, float(pair[1])  # float() reads Prometheus' NaN, +Inf and -Inf
        except (ValueError, TypeError, OverflowError, OSError):
            raise self._failed(
                kpi, f"unexpected sample from {self._shown_url}: {web.snippet(pair)}"
            ) from None

    # ------------------------------------------------------------ HTTP

    def _call(
        self, kpi: rules.Kpi, endpoint: str, params: dict[str, str], deadline: float | None
    ) -> Mapping[str, Any]:
        """The ``data`` of a successful API response; any failure is a SourceError."""
        url = f"{self._base}/api/v1/{endpoint}"
        shown = f"{self._shown_url}/api/v1/{endpoint}"
        began = time.monotonic()
        left = self._timeout if deadline is None else deadline - began
        if left <= 0:
            raise self._timed_out(kpi, shown, self._timeout)
        query = [*self._extra, ("query", kpi.query or ""), *params.items()]
        query.append(("timeout", f"{left:.3f}"))
        try:
            response = self._session.get(url, params=query, timeout=left)
            body = response.content
        except Exception as exc:  # any failure of the request becomes a SourceError
            elapsed = time.monotonic() - began
            if elapsed >= left or _is_timeout(exc):
                raise self._timed_out(kpi, shown, elapsed) from exc
            raise self._down(kpi, f"request to {shown} failed: {web.describe(exc)}") from exc
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError
            document = None
        if not isinstance(document, dict):
            got = web.body_description(web.content_type(response), body)
            if response.status_code >= 400:
                failed = self._down if web.server_side(response.status_code) else self._failed
                raise failed(kpi, f"{shown} answered {web.status_line(response)}: {got}")
            raise self._failed(
                kpi, f"{shown}: expected a Prometheus API response (JSON), got {got}"
            )
        if "error" not in document and response.status_code >= 400:  # not Prometheus' JSON
            status = web.status_line(response)
            failed = self._down if web.server_side(response.status_code) else self._failed
            raise failed(kpi, f"{shown} answered {status}: {web.snippet(document)}")
        if document.get("status") == "error" or response.status_code >= 400:
            error = str(document.get("error"))
            kind = str(document.get("errorType") or "")
            what = f"Prometheus refused PromQL {kpi.query!r}: {error}"
            if kind in ("timeout", "canceled"):
                raise self._timed_out(kpi, shown, time.monotonic() - began, what)
            raise self._failed(kpi, f"{what} ({kind})" if kind else what)
        data = document.get("data")
        if document.get("status") != "success" or not isinstance(data, dict):
            raise self._failed(kpi, f"unexpected response from {shown}: {web.snippet(document)}")
        return data

    # ------------------------------------------------------------ errors

    def _utc(self, kpi: rules.Kpi, value: datetime) -> datetime:
        try:
            return to_utc(value)  # naive datetimes are UTC, as everywhere in kpiwatch
        except ValueError as exc:
            raise self._failed(kpi, str(exc)) from None

    def _failed(self, kpi: rules.Kpi, what: str) -> SourceError:
        return SourceError(f"query for {kpi.id!r}: {what}", source=self.name, kpi=kpi.id)

    def _down(self, kpi: rules.Kpi, what: str) -> SourceUnavailable:
        return SourceUnavailable(f"query for {kpi.id!r}: {what}", source=self.name, kpi=kpi.id)

    def _bad(self, kpi: rules.Kpi, what: str) -> BadValueError:
        return BadValueError(f"query for {kpi.id!r}: {what}", source=self.name, kpi=kpi.id)

    def _timed_out(
        self, kpi: rules.Kpi, shown: str, elapsed: float, detail: str = ""
    ) -> SourceTimeout:
        why = f": {detail}" if detail else ""
        return SourceTimeout(
            f"query for {kpi.id!r}: request to {shown} timed out after {elapsed:.1f}s "
            f"(timeout {self._timeout:g}s){why}",
            source=self.name,
            kpi=kpi.id,
        )


def _epoch(at: datetime) -> str:
    return f"{at.timestamp():.3f}"


def _label_sets(shown: Sequence[Any], every: Sequence[Any]) -> list[str]:
    """``{instance="a"}`` per series: only the labels whose values differ between them."""
    metrics = [s.get("metric") if isinstance(s, dict) else None for s in every]
    labels = [m if isinstance(m, dict) else {} for m in metrics]
    names = sorted({name for m in labels for name in m})
    differing = [n for n in names if len({str(m.get(n)) for m in labels}) > 1] or names
    sets = []
    for metric in labels[: len(shown)]:
        inner = ", ".join(
            f"{n}={json.dumps(str(metric[n]), ensure_ascii=False)}"
            for n in differing
            if n in metric
        )
        sets.append(f"{{{inner}}}")
    return sets


def _prom_number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return "+Inf" if value > 0 else "-Inf"


def _is_timeout(exc: BaseException) -> bool:
    # a stall while reading the body reaches us as a ConnectionError around ReadTimeoutError
    seen: BaseException | None = exc
    while seen is not None:
        if web.is_timeout(seen):
            return True
        inner = seen.args[0] if seen.args and isinstance(seen.args[0], BaseException) else None
        seen = inner or (seen.reason if isinstance(seen, MaxRetryError) else None)
    return False
