"""The on-call digest gathered from a real store: what changed since the last digest,
for the KPIs in the rules, read in one query however many KPIs there are."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from kpiwatch.config.loader import load_rule_text
from kpiwatch.model import Evaluation, KpiState, ReviewCadence, Status
from kpiwatch.notify.digests import ONCALL, oncall_digest
from kpiwatch.store.repository import Store

NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
RULES = "kpis:\n" + "".join(
    f"  - {{id: k{i}, name: K{i}, owner: o@example.com, direction: higher_is_better,"
    f" source: push, thresholds: {{red: 1}}}}\n"
    for i in range(30)
)


def _save(store: Store, kpi_id: str, status: Status, at: datetime) -> None:
    state = KpiState(kpi_id, status, since=at, review=ReviewCadence.WEEKLY, last_evaluated=at)
    evaluation = Evaluation(kpi_id=kpi_id, at=at, value=None, observed_at=None,
                            raw_status=status, findings=(), state=state, events=())  # fmt: skip
    store.save_evaluation(evaluation)


def test_the_digest_lists_the_changes_since_the_last_one_in_one_query(store: Store) -> None:
    rules = load_rule_text(RULES).rules
    mark = NOW - timedelta(days=1)
    for i in range(30):  # green two days ago: before the last digest
        _save(store, f"k{i}", Status.GREEN, NOW - timedelta(days=2))
    _save(store, "k7", Status.RED, NOW - timedelta(hours=3))
    _save(store, "k2", Status.RED, NOW - timedelta(hours=5))
    _save(store, "gone", Status.RED, NOW - timedelta(hours=4))  # no longer in the rules
    _save(store, "k7", Status.GREEN, NOW - timedelta(hours=1))
    store.set_digest_mark(ONCALL, mark)

    reads: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        if "FROM status_changes" in statement:
            reads.append(statement)

    sa.event.listen(store.engine, "before_cursor_execute", count)
    digest = oncall_digest(store, rules, "http://kpiwatch.example", NOW)
    sa.event.remove(store.engine, "before_cursor_execute", count)
    assert [(c.kpi_id, c.to_status, c.at) for c in digest.transitions] == [
        ("k2", Status.RED, NOW - timedelta(hours=5)),
        ("k7", Status.RED, NOW - timedelta(hours=3)),
        ("k7", Status.GREEN, NOW - timedelta(hours=1)),
    ]
    assert len(reads) == 1  # was one per KPI in the rules (30 here)
    assert [d.kpi.id for d in digest.attention] == ["k2"]
