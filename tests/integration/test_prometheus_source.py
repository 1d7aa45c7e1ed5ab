"""PrometheusQuerySource against a real Prometheus scraping a tiny exporter every second.

One Prometheus serves the whole module (start-up and first scrapes take a few
seconds). Error shapes a real server cannot easily give are in
tests/unit/sources/test_prometheus_api.py, as are
connection failures and timeouts.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import requests
from prometheus_server import Prometheus, running_prometheus

from kpiwatch.config import rules
from kpiwatch.errors import BadValueError, SourceError
from kpiwatch.sources.prometheus import PrometheusQuerySource

MIN_SCRAPES = 4  # history the range tests can count on


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    with running_prometheus(tmp_path_factory.mktemp("prometheus")) as server:
        _wait_for_scrapes(server.url, MIN_SCRAPES + 2)  # the grid may miss the ends
        yield server


def _wait_for_scrapes(url: str, count: int) -> None:
    deadline = time.monotonic() + 20
    query = "count_over_time(kpi_demo_value[1m])"
    while time.monotonic() < deadline:
        result = requests.get(f"{url}/api/v1/query", params={"query": query}, timeout=2).json()
        samples = result["data"]["result"]
        if samples and float(samples[0]["value"][1]) >= count:
            return
        time.sleep(0.25)
    raise RuntimeError(f"fewer than {count} scrapes of the exporter after 20s")


def _source(url: str, **options: object) -> PrometheusQuerySource:
    config = rules.PrometheusSource.model_validate({"type": "prometheus", "url": url, **options})
    return PrometheusQuerySource("prom", config)


def _kpi(query: str, **options: object) -> rules.Kpi:
    return rules.Kpi.model_validate(
        {
            "id": "k",
            "name": "K",
            "owner": "ann",
            "direction": "higher_is_better",
            "source": "prom",
            "query": query,
            **options,
        }
    )


@pytest.fixture
def source(prometheus: Prometheus) -> Iterator[PrometheusQuerySource]:
    src = _source(prometheus.url, timeout="5s", step="1s")
    yield src
    src.close()


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def test_scalar_query(source: PrometheusQuerySource) -> None:
    now = _now()
    result = source.fetch(_kpi("scalar(kpi_demo_value)"), now)
    assert [(o.observed_at, o.value) for o in result.observations] == [(now, 42.5)]
    assert result.duration > 0


def test_one_series_gives_its_value(source: PrometheusQuerySource) -> None:
    now = _now()
    result = source.fetch(_kpi('kpi_demo_value{team="a"}'), now)
    assert len(result.observations) == 1
    assert result.current.value == 42.5
    assert result.current.observed_at == now  # an instant query's samples carry the evaluation time
    assert result.current.kpi_id == "k"


def test_no_series_is_a_bad_value(source: PrometheusQuerySource) -> None:
    with pytest.raises(BadValueError) as caught:
        source.fetch(_kpi('up{job="x"}'), _now())
    assert (
        str(caught.value)
        == "source 'prom': query for 'k': PromQL 'up{job=\"x\"}' returned no series"
    )


def test_several_series_are_named(source: PrometheusQuerySource) -> None:
    with pytest.raises(SourceError) as caught:
        source.fetch(_kpi("kpi_multi"), _now())
    assert not isinstance(caught.value, BadValueError)
    message = str(caught.value)
    assert "returned 4 series, expected one: " in message
    # only the differing label is shown, three of four, then an ellipsis
    assert '{instance="a"}, {instance="b"}, {instance="c"}, …' in message
    assert "job=" not in message
    assert "e.g. sum(kpi_multi)" in message


def test_syntax_error_quotes_prometheus(source: PrometheusQuerySource) -> None:
    with pytest.raises(SourceError) as caught:
        source.fetch(_kpi("sum(kpi_demo_value"), _now())
    message = str(caught.value)
    assert "Prometheus refused PromQL 'sum(kpi_demo_value': " in message
    assert "parse error" in message
    assert message.endswith("(bad_data)")


def test_range_vector_is_refused(source: PrometheusQuerySource) -> None:
    with pytest.raises(SourceError, match="returned a range vector; an instant query must give"):
        source.fetch(_kpi("kpi_demo_value[1m]"), _now())


@pytest.mark.parametrize(
    ("query", "shown"), [("scalar(kpi_multi)", "NaN"), ("1/0", "+Inf"), ("-1/0", "-Inf")]
)
def test_non_finite_values_are_bad(source: PrometheusQuerySource, query: str, shown: str) -> None:
    with pytest.raises(BadValueError, match=f"returned {shown.replace('+', '[+]')}, not a finite"):
        source.fetch(_kpi(query), _now())


def test_range_fills_history_in_time_order(source: PrometheusQuerySource) -> None:
    now = _now()
    result = source.fetch(_kpi("kpi_demo_value", range="1m"), now)
    times = [o.observed_at for o in result.observations]
    assert len(times) >= MIN_SCRAPES
    assert times == sorted(times)
    assert len(set(times)) == len(times)
    assert times[0] >= now - timedelta(minutes=1)
    assert result.current.observed_at == now
    assert {o.value for o in result.observations} == {42.5}
    # one step (the source's 1s) between the points of the history
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(times))


def test_fetch_range_over_the_last_minute(source: PrometheusQuerySource) -> None:
    end = _now()
    result = source.fetch_range(_kpi("kpi_demo_value"), end - timedelta(minutes=1), end)
    times = [o.observed_at for o in result.observations]
    assert len(times) >= MIN_SCRAPES
    assert times == sorted(times)
    assert times[-1] == end
    assert {o.value for o in result.observations} == {42.5}


def test_fetch_range_longer_than_one_request(source: PrometheusQuerySource) -> None:
    # 5h at 1s is 18,001 points: two requests, each within Prometheus' 11,000
    end = _now()
    long = source.fetch_range(_kpi("kpi_demo_value"), end - timedelta(hours=5), end)
    short = source.fetch_range(_kpi("kpi_demo_value"), end - timedelta(minutes=1), end)
    assert long.observations == short.observations  # the server has only seconds of data


def test_a_changed_value_arrives(prometheus: Prometheus, source: PrometheusQuerySource) -> None:
    prometheus.exporter.set("kpi_changing", 7.25)
    deadline = time.monotonic() + 10
    while source.fetch(_kpi("kpi_changing"), _now()).current.value != 7.25:
        assert time.monotonic() < deadline, "the new value was not scraped within 10s"
        time.sleep(0.2)


def test_default_step_is_one_minute(prometheus: Prometheus) -> None:
    src = _source(prometheus.url)
    try:
        now = _now()
        result = src.fetch(_kpi("kpi_demo_value", range="1m"), now)
        # the server is younger than a minute: the point at now-1m has no data yet
        assert [o.observed_at for o in result.observations] == [now]
    finally:
        src.close()
