"""The push source reads back the latest pushed value."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kpiwatch.config.rules import Kpi
from kpiwatch.errors import BadValueError, SourceError
from kpiwatch.model import Observation
from kpiwatch.sources.push import PushSource

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
PUSHED = Observation("nps", datetime(2024, 5, 30, tzinfo=UTC), 42.0)
KPI = Kpi(id="nps", name="NPS", owner="ann", direction="higher_is_better", source="push")


def test_returns_the_latest_pushed_observation() -> None:
    result = PushSource(lambda kpi_id: PUSHED if kpi_id == "nps" else None).fetch(KPI, NOW)

    assert result.observations == (PUSHED,)
    assert result.current.observed_at == PUSHED.observed_at  # not now: when it was pushed


def test_nothing_pushed_yet_is_a_bad_value() -> None:
    with pytest.raises(BadValueError, match="no value pushed yet for 'nps'") as caught:
        PushSource(lambda kpi_id: None).fetch(KPI, NOW)

    assert (caught.value.source, caught.value.kpi) == ("push", "nps")


def test_a_failing_lookup_is_a_source_error() -> None:
    def broken(kpi_id: str) -> Observation | None:
        raise OSError("disk gone")

    with pytest.raises(SourceError, match="disk gone"):
        PushSource(broken).fetch(KPI, NOW)
