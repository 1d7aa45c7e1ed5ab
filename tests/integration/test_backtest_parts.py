"""Backtest parts: forked workers give exactly what one process gives, in KPI order."""

from __future__ import annotations

import json
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from kpiwatch.backtest import report
from kpiwatch.backtest import run as backtest_run
from kpiwatch.backtest.run import Request, replay_parts
from kpiwatch.config.loader import load_rule_text
from kpiwatch.model import Observation
from kpiwatch.store.repository import Store

START = datetime(2026, 1, 5, tzinfo=UTC)
N = 7


def _rules() -> str:
    kpis = "\n".join(
        f"  - {{id: k{i}, name: K{i}, owner: o@example.com, direction: lower_is_better,"
        f" source: push, every: 1d, thresholds: {{yellow: {4 + i * 0.1:.1f}, red: 6}}}}"
        for i in range(N)
    )
    return f"kpis:\n{kpis}\n"


def _request(tmp_path: Path, as_json: bool) -> Request:
    url = f"sqlite:///{tmp_path}/state.db"
    store = Store.open(url)
    store.add_observations(
        Observation(f"k{i}", START + timedelta(days=d), 3.5 + ((d * (i + 3)) % 11) * 0.25)
        for i in range(N)
        for d in range(40)
    )
    store.close()
    rules = load_rule_text(_rules()).rules
    end = START + timedelta(days=39)
    return Request(rules, url, None, end, ZoneInfo("UTC"), time(9), as_json=as_json)


@pytest.mark.parametrize("as_json", [False, True])
def test_forked_parts_equal_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, as_json: bool
) -> None:
    request = _request(tmp_path, as_json)
    ids = [f"k{i}" for i in range(N)]
    monkeypatch.setattr(backtest_run, "PART", 2)  # four parts for two workers
    alone = list(replay_parts(request, ids, jobs=1))
    forked = list(replay_parts(request, ids, jobs=2))
    assert [p.chunks for p in forked] == [p.chunks for p in alone]
    assert len(forked) == 4
    chunks = [c for p in forked for c in p.chunks]
    assert len(chunks) == N
    if as_json:
        assert [json.loads(c)["id"] for c in chunks] == ids  # in KPI order
    else:
        assert [c.split(" ", 1)[0] for c in chunks] == ids
    totals = report.Totals()
    for part in forked:
        totals.add_part(part.totals)
    assert totals.kpis == N
    assert totals.evaluations == N * 40
    assert totals.transitions > N  # the values cross the thresholds back and forth
