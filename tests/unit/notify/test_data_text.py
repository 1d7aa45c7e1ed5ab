"""The wording of data problems (SPEC §5a), shared by every channel."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kpiwatch.evaluation.incidents import step_incident
from kpiwatch.model import Event, EventKind
from kpiwatch.notify.text import data_line, headline

NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def test_a_source_incident_names_every_kpi_and_its_recovery_the_duration() -> None:
    kpis = [f"k{i}" for i in range(52)]
    health, [opened] = step_incident("wh", None, "cannot connect: refused", NOW, kpis)
    line = headline(opened, None)
    assert line.startswith(
        "🚫 data incident on source wh: cannot connect: refused; 52 KPIs blind: k0, "
    )
    assert line.endswith(", k49 and 2 more")
    _, [closed] = step_incident("wh", health, None, NOW + timedelta(days=3, hours=2), kpis)
    assert headline(closed, None) == "✅ source wh works again after 3d2h (52 KPIs)"


def test_a_kpis_own_problem_is_told_verbatim() -> None:
    event = Event(EventKind.DATA_INCIDENT, "k", NOW, kpi_id="churn", source="wh",
                  data={"scope": "kpi", "reason": "query for 'churn' failed: no such column: x"},
                  )  # fmt: skip
    assert data_line(event, "Churn") == (
        "❔ Churn has no data: query for 'churn' failed: no such column: x"
    )


def test_a_long_source_outage_names_the_data_owner_and_when_they_heard() -> None:
    event = Event(EventKind.DATA_INCIDENT, "k", NOW + timedelta(days=1), kpi_id="churn",
                  source="wh", data={
                      "scope": "source", "reason": "cannot connect", "data_owner": "data@x.com",
                      "problem_since": NOW.isoformat(), "data_owner_told": NOW.isoformat(),
                  })  # fmt: skip
    assert data_line(event, "Churn") == (
        "❔ Churn has had no fresh data for 1d: source wh is failing (cannot connect); "
        "data@x.com was told at 2026-03-02 08:00 UTC"
    )


def test_rows_stored_by_0_1_still_read() -> None:
    old = Event(EventKind("source_down"), "k", NOW, source="wh", data={"error": "refused"})
    assert headline(old, None) == "🚫 data incident on source wh: refused"
    back = Event(EventKind("source_recovered"), "k", NOW, source="wh", data={})
    assert headline(back, None) == "✅ source wh works again"
