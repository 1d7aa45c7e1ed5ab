"""Acks and annotations as events of a running red or yellow episode."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kpiwatch.config.rules import Kpi
from kpiwatch.model import DataProblem, EventKind, KpiState, ReviewCadence, Status
from kpiwatch.notify.follow_ups import follow_up

NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
KPI = Kpi(id="churn", name="Churn", owner="dana@example.com", direction="lower_is_better",
          source="push", unit="%")  # fmt: skip
RED = KpiState("churn", Status.RED, NOW, ReviewCadence.WEEKLY, value=6.2, verdict=Status.RED,
               reasons=("value 6.2 % > red 5.5 %",))  # fmt: skip


def test_an_ack_of_a_red_episode_is_an_event_of_that_episode() -> None:
    later = NOW + timedelta(hours=2)
    event = follow_up(EventKind.ACKNOWLEDGED, KPI, RED, "dana", "on it", later)
    assert event is not None
    assert event.kpi_id == "churn"
    assert event.key == f"churn:acknowledged:{NOW.isoformat()}:{later.isoformat()}"
    assert event.data["since"] == NOW.isoformat()
    assert (event.data["author"], event.data["text"]) == ("dana", "on it")
    assert (event.data["status"], event.data["value"]) == ("red", 6.2)


def test_a_blind_red_episode_takes_follow_ups_and_a_green_or_new_kpi_none() -> None:
    blind = RED._replace(status=Status.UNKNOWN,
                         data_problem=DataProblem(NOW, "cannot connect", "source", "wh"))
    event = follow_up(EventKind.ANNOTATED, KPI, blind, "ben", "ETL moved", NOW)
    assert event is not None
    assert (event.data["status"], event.data["verdict"]) == ("unknown", "red")
    green = RED._replace(status=Status.GREEN, verdict=Status.GREEN)
    assert follow_up(EventKind.ANNOTATED, KPI, green, "ben", "fine", NOW) is None
    assert follow_up(EventKind.ANNOTATED, KPI, None, "ben", "fine", NOW) is None
