"""Store.migrate() skips Alembic when the database is at HEAD_REVISION: it must be the head."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from kpiwatch.store import migrate as migrations
from kpiwatch.store.repository import HEAD_REVISION, Store


def test_head_revision_is_the_newest_migration() -> None:
    # a new migration without bumping HEAD_REVISION would never run on existing databases
    assert migrations.head_revision() == HEAD_REVISION


def test_a_store_knows_when_it_is_at_head(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    empty = Store.open(url, migrate=False)
    try:
        assert not empty.at_head()  # no alembic_version table yet
        empty.migrate()
        assert empty.at_head()
        assert migrations.current_revision(empty.engine) == HEAD_REVISION
        empty.migrate()  # at head: nothing to do, and nothing fails
        assert empty.at_head()
    finally:
        empty.close()


def test_an_older_schema_is_still_migrated(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = Store.open(url, migrate=False)
    try:
        migrations.upgrade(store.engine, "0002")
        assert not store.at_head()
        store.migrate()
        assert migrations.current_revision(store.engine) == HEAD_REVISION
    finally:
        store.close()


def test_states_stored_before_reminders_start_with_none_told(tmp_path: Path) -> None:
    # 0005 adds kpi_state.reminders_sent: a state written by 0004 reads as 0 reminders
    import sqlalchemy as sa

    from kpiwatch.model import KpiState, ReviewCadence, Status
    from kpiwatch.store import rows
    from kpiwatch.store.schema import kpi_state

    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = Store.open(url, migrate=False)
    try:
        migrations.upgrade(store.engine, "0004")
        since = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
        state = KpiState("churn", Status.RED, since, ReviewCadence.MONTHLY, reminders_sent=5)
        later = {"reminders_sent", "verdict", "data_problem", "plan"}
        columns = [c._copy() for c in kpi_state.columns if c.name not in later]
        old = sa.Table("kpi_state", sa.MetaData(), *columns)
        row = {k: v for k, v in rows.state_row(state).items() if k not in later}
        with store.engine.begin() as connection:
            connection.execute(sa.insert(old), row)
        store.migrate()
        # 0006 adds the verdict: a state stored before reads its status as its verdict
        assert store.get_state("churn") == state._replace(reminders_sent=0, verdict=Status.RED)
    finally:
        store.close()


def test_states_stored_before_verdicts_read_their_status_as_the_verdict(tmp_path: Path) -> None:
    import sqlalchemy as sa

    from kpiwatch.model import KpiState, ReviewCadence, Status
    from kpiwatch.store.schema import kpi_state

    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = Store.open(url, migrate=False)
    try:
        migrations.upgrade(store.engine, "0005")
        since = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
        later = ("verdict", "data_problem", "plan")
        columns = [c._copy() for c in kpi_state.columns if c.name not in later]
        old = sa.Table("kpi_state", sa.MetaData(), *columns)
        with store.engine.begin() as connection:
            for kpi_id, status in (("churn", Status.YELLOW), ("mrr", Status.UNKNOWN)):
                connection.execute(sa.insert(old), {
                    "kpi_id": kpi_id, "status": status.value, "since": since,
                    "review": "monthly", "pending_count": 0, "reasons": [], "green_count": 0,
                })  # fmt: skip
        store.migrate()
        churn, mrr = store.get_state("churn"), store.get_state("mrr")
        assert churn == KpiState("churn", Status.YELLOW, since, ReviewCadence.MONTHLY,
                                 verdict=Status.YELLOW)  # fmt: skip
        assert mrr is not None
        assert mrr.verdict is None
        assert mrr.data_problem is None
    finally:
        store.close()
