"""The state store: the only way the rest of kpiwatch reads or writes the database.

Every write that belongs together (an evaluation's state, history, events and
the notifications they cause) happens in one transaction, so a crash between
"decided" and "queued to tell people" cannot lose or half-write anything. The
outbox rows are what the dispatcher later delivers.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from operator import attrgetter
from types import TracebackType
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from kpiwatch.errors import StoreError, redact
from kpiwatch.model import (
    Delivery,
    Evaluation,
    Event,
    EventKind,
    KpiState,
    Observation,
    SlackThread,
    Status,
    StatusChange,
)
from kpiwatch.store import rows, sql
from kpiwatch.store.base import UNION_CHUNK, chunks, newest_chunk, newest_observations
from kpiwatch.store.engine import create_store_engine
from kpiwatch.store.fencing import Basis, insert_new_states, locked_verdicts
from kpiwatch.store.outbox_store import OutboxStore
from kpiwatch.store.people_store import PeopleStore
from kpiwatch.store.retention_store import RetentionStore
from kpiwatch.store.schema import digest_marks as marks_t
from kpiwatch.store.schema import events as events_t
from kpiwatch.store.schema import kpi_state as state_t
from kpiwatch.store.schema import observations as observations_t
from kpiwatch.store.schema import slack_threads as threads_t
from kpiwatch.store.schema import source_health as health_t
from kpiwatch.store.schema import status_changes as changes_t
from kpiwatch.store.transactions import first_line


class EvaluationToSave(NamedTuple):
    """One evaluation for :meth:`Store.save_evaluations`, with what it writes besides."""

    evaluation: Evaluation
    deliveries: Mapping[str, Sequence[Delivery]] = {}
    observations: Sequence[Observation] = ()
    based_on: Basis | None = None  # None: saved without checking
    restated: Sequence[Observation] = ()  # stored points a later poll gave new values for


# The newest migration in store/migrations/versions: a database already there is not
# migrated, so Alembic is not imported. tests/unit/store/test_migrate_head.py keeps it true.
HEAD_REVISION = "0007"


class Store(OutboxStore, PeopleStore, RetentionStore):
    """Observations, KPI state, history, events, the outbox, source health, and what
    people add: silences, acks, annotations; plus the notifiers' bookkeeping."""

    @classmethod
    def open(cls, url: str, *, migrate: bool = True, create: bool = True) -> Store:
        """Connect to ``url`` and (by default) bring its schema up to date; without
        ``create``, a SQLite file that is not there is a StoreError, not a new database."""
        store = cls(create_store_engine(url, create=create))
        if migrate:
            try:
                store.migrate()
            except BaseException:
                store.close()
                raise
        return store

    @property
    def url(self) -> str:
        """The database URL with the password hidden."""
        return self._engine.url.render_as_string(hide_password=True)

    def migrate(self) -> None:
        """Apply every pending migration (idempotent)."""
        if self.at_head():
            return  # the usual restart: Alembic and Mako (~9 MiB resident) stay unimported
        from alembic.util import CommandError

        from kpiwatch.store import migrate as migrations

        try:
            migrations.upgrade(self._engine)
        except CommandError as exc:  # e.g. the database was migrated by a newer kpiwatch
            raise StoreError(f"cannot migrate {self.url}: {redact(str(exc))}") from exc
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"cannot migrate {self.url}: {first_line(exc)}") from exc

    def at_head(self) -> bool:
        """Whether the schema is at :data:`HEAD_REVISION`, read without Alembic."""
        try:
            with self._engine.connect() as connection:
                found = connection.execute(sa.text("SELECT version_num FROM alembic_version"))
                return list(found.scalars()) == [HEAD_REVISION]
        except sa.exc.SQLAlchemyError:
            return False  # no table yet (an empty database): Alembic decides

    def close(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()

    def ping(self) -> bool:
        """Whether the database answers ``SELECT 1`` (for health checks; never raises)."""
        try:
            with self._engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
        except Exception:
            return False
        return True

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- observations --------------------------------------------------------

    def add_observations(self, observations: Iterable[Observation]) -> int:
        """Store observations, ignoring points already stored; returns how many were new."""
        with self._write("add observations") as connection:
            return self._insert_observations(connection, observations)

    def history(
        self, kpi_id: str, *, since: datetime | None = None, limit: int | None = None
    ) -> list[Observation]:
        """A KPI's observations, oldest first; with ``limit``, the newest ``limit`` of them."""
        query = sa.select(observations_t).where(observations_t.c.kpi_id == kpi_id)
        if since is not None:
            query = query.where(observations_t.c.observed_at >= since)
        found = self._read_last(query, [observations_t.c.observed_at], limit, "read history")
        return [rows.to_observation(row) for row in found]

    def latest(self, kpi_id: str) -> Observation | None:
        """A KPI's newest observation."""
        found = self.history(kpi_id, limit=1)
        return found[0] if found else None

    def latest_of(self, kpi_ids: Collection[str]) -> dict[str, Observation]:
        """The newest observation of each of ``kpi_ids`` that has one (absent: none)."""
        found: dict[str, Observation] = {}
        with self._read("read latest observations") as connection:
            for chunk in chunks(kpi_ids):
                newest = (
                    sa.select(
                        observations_t.c.kpi_id,
                        sa.func.max(observations_t.c.observed_at).label("at"),
                    )
                    .where(sql.one_of(observations_t.c.kpi_id, connection.dialect.name, chunk))
                    .group_by(observations_t.c.kpi_id)
                    .subquery()
                )
                query = sa.select(observations_t).join(
                    newest,
                    sa.and_(
                        observations_t.c.kpi_id == newest.c.kpi_id,
                        observations_t.c.observed_at == newest.c.at,
                    ),
                )
                for row in connection.execute(query).mappings():
                    found[row["kpi_id"]] = rows.to_observation(row)
        return found

    def evaluation_inputs(
        self,
        kpi_ids: Collection[str],
        *,
        since: datetime,
        newest: Mapping[str, int] | None = None,
    ) -> dict[str, tuple[KpiState | None, list[Observation]]]:
        """Each KPI's stored state and its history since ``since`` (oldest first); for a
        KPI in ``newest``, only its newest ``newest[kpi_id]`` points since ``since``.

        What evaluating the KPIs needs, read through one connection with two
        queries per few hundred KPIs instead of two transactions per KPI.
        ``newest`` is :func:`kpiwatch.evaluation.history_points` of the KPIs whose
        rules look only at their last points: the read then stays the same size
        however long the history grows (a read of the whole window grew with every
        point kept, and with it each cycle's memory and time; issue 15).
        """
        states: dict[str, KpiState] = {}
        history: dict[str, list[Observation]] = {kpi_id: [] for kpi_id in kpi_ids}
        limits = newest or {}
        whole = [kpi_id for kpi_id in history if kpi_id not in limits]
        c = observations_t.c
        with self._read("read states and history") as connection:
            dialect = connection.dialect.name
            for chunk in chunks(history):
                query = sa.select(state_t).where(sql.one_of(state_t.c.kpi_id, dialect, chunk))
                for row in connection.execute(query).mappings():
                    states[row["kpi_id"]] = rows.to_state(row)
            for chunk in chunks(whole):
                query = (
                    sa.select(observations_t)
                    .where(sql.one_of(c.kpi_id, dialect, chunk), c.observed_at >= since)
                    .order_by(c.kpi_id, c.observed_at)
                )
                for row in connection.execute(query).mappings():
                    history[row["kpi_id"]].append(rows.to_observation(row))
            limited = sorted(limits.keys() & history.keys(), key=limits.__getitem__)
            size = newest_chunk(dialect, UNION_CHUNK)
            for chunk in chunks(limited, size):  # by limit: similar ones together
                points = max(limits[kpi_id] for kpi_id in chunk)
                newest_first, params = newest_observations(
                    chunk, points, chunk=size, since=since, dialect=dialect
                )
                for row in connection.execute(newest_first, params).mappings():
                    history[row["kpi_id"]].append(rows.to_observation(row))
        for kpi_id in limited:  # a UNION's rows come in no set order; the chunk's largest limit
            found = sorted(history[kpi_id], key=attrgetter("observed_at"))
            history[kpi_id] = found[-limits[kpi_id] :]
        return {kpi_id: (states.get(kpi_id), history[kpi_id]) for kpi_id in history}

    # -- state ---------------------------------------------------------------

    def get_state(self, kpi_id: str) -> KpiState | None:
        query = sa.select(state_t).where(state_t.c.kpi_id == kpi_id)
        with self._read("read state") as connection:
            row = connection.execute(query).mappings().first()
        return None if row is None else rows.to_state(row)

    def states_of(self, kpi_ids: Collection[str]) -> dict[str, KpiState]:
        """The stored states of these KPIs (those that have one), in one read."""
        found: dict[str, KpiState] = {}
        with self._read("read states") as connection:
            dialect = connection.dialect.name
            for chunk in chunks(kpi_ids):
                query = sa.select(state_t).where(sql.one_of(state_t.c.kpi_id, dialect, chunk))
                for row in connection.execute(query).mappings():
                    found[row["kpi_id"]] = rows.to_state(row)
        return found

    def evaluated_since(self, kpi_ids: Collection[str], since: datetime) -> set[str]:
        """Those of ``kpi_ids`` last evaluated at or after ``since``: a replica claiming
        a due time finds the ones a dead replica saved but never marked done."""
        found: set[str] = set()
        c = state_t.c
        with self._read("read evaluation times") as connection:
            dialect = connection.dialect.name
            for chunk in chunks(kpi_ids):
                query = sa.select(c.kpi_id).where(
                    sql.one_of(c.kpi_id, dialect, chunk), c.last_evaluated >= since
                )
                found.update(connection.execute(query).scalars())
        return found

    def state_ids(self) -> set[str]:
        """The ids of the KPIs that have a state: a start compares them with the rules
        without reading (and building) every state."""
        with self._read("read state ids") as connection:
            return set(connection.execute(sa.select(state_t.c.kpi_id)).scalars())

    def states(
        self,
        *,
        statuses: Collection[Status] | None = None,
        review_by: datetime | None = None,
        started_by: datetime | None = None,
    ) -> dict[str, KpiState]:
        """Every KPI's state, in one query; only those whose status is one of
        ``statuses``, whose next review is at or before ``review_by``, and whose episode
        started at or before ``started_by``, for each one given.

        The ticks ask for the few states they may act on (the red ones old enough for
        a reminder, the reviews due) rather than building all 10,000 each minute
        (issue 15).
        """
        query = sa.select(state_t)
        if statuses is not None:
            query = query.where(state_t.c.status.in_(sorted(s.value for s in statuses)))
        if review_by is not None:
            query = query.where(state_t.c.next_review <= review_by)  # NULL: never
        if started_by is not None:
            query = query.where(state_t.c.since <= started_by)
        with self._read("read states") as connection:
            found = connection.execute(query).mappings().all()
        return {row["kpi_id"]: rows.to_state(row) for row in found}

    def save_evaluation(
        self,
        evaluation: Evaluation,
        deliveries: Mapping[str, Sequence[Delivery]] | None = None,
        *,
        observations: Iterable[Observation] = (),
        based_on: Basis | None = None,
        restated: Sequence[Observation] = (),
    ) -> None:
        """Record one evaluation atomically.

        Writes the observations (ignoring known points; ``restated`` ones replace
        the stored value of their point, SPEC §2a), the KPI's new state, a
        status change row when the effective status differs from the stored one
        (or there was none), the events (ignoring known keys) and, for each new
        event, the outbox rows ``deliveries[event.key]``. All or nothing.

        With ``based_on``, raises :class:`EvaluationSuperseded` (and writes nothing)
        when the stored state is no longer the one the evaluation started from.
        """
        state = evaluation.state
        with self._write("save evaluation") as connection:
            before, new = locked_verdicts(connection, [(state.kpi_id, based_on, evaluation.at)])
            self._insert_observations(connection, observations)
            self._restate(connection, restated)
            if new:
                insert_new_states(connection, [rows.state_row(state)])
            else:
                sql.upsert(connection, state_t, rows.state_row(state))
            change = rows.transition_row(evaluation, before)
            if change is not None:
                connection.execute(sa.insert(changes_t), change)
            self._insert_events(connection, evaluation.events, deliveries or {})

    def save_evaluations(self, batch: Sequence[EvaluationToSave]) -> None:
        """Record many evaluations in one transaction, each as :meth:`save_evaluation` does.

        One evaluation per KPI. All or nothing: when this raises, none of them is
        stored (the caller may save them one by one to find the bad one). The rows
        go in with one executemany per table rather than a transaction per KPI.
        """
        if not batch:
            return
        kpi_ids = [item.evaluation.state.kpi_id for item in batch]
        if len(set(kpi_ids)) != len(kpi_ids):
            raise ValueError("save_evaluations takes one evaluation per KPI")
        # one row per key even within the batch: duplicates would only be ignored anyway
        observations = {
            (o.kpi_id, o.observed_at): rows.observation_row(o)
            for item in batch
            for o in item.observations
        }
        with self._write("save evaluations") as connection:
            bases = [(i.evaluation.state.kpi_id, i.based_on, i.evaluation.at) for i in batch]
            before, new = locked_verdicts(connection, bases)
            sql.insert_ignore_rows(connection, observations_t, list(observations.values()))
            self._restate(connection, [o for item in batch for o in item.restated])
            states = [rows.state_row(item.evaluation.state) for item in batch]
            insert_new_states(connection, [row for row in states if row["kpi_id"] in new])
            sql.upsert_many(connection, state_t, [r for r in states if r["kpi_id"] not in new])
            found = (rows.transition_row(item.evaluation, before) for item in batch)
            changes = [change for change in found if change is not None]
            sql.insert_rows(connection, changes_t, changes)
            # every KPI's events in one go; a key twice is recorded once, with the
            # deliveries of its first, as when each KPI's events went in on their own
            events = [event for item in batch for event in item.evaluation.events]
            deliveries: dict[str, Sequence[Delivery]] = {}
            for item in batch:
                for key, targets in item.deliveries.items():
                    deliveries.setdefault(key, targets)
            self._insert_events(connection, events, deliveries)

    def save_state(
        self,
        state: KpiState,
        events: Sequence[Event] = (),
        deliveries: Mapping[str, Sequence[Delivery]] | None = None,
        *,
        based_on: Basis | None = None,
    ) -> None:
        """Store a state with its events and outbox rows (review ticks); no history row.

        With ``based_on``, raises :class:`EvaluationSuperseded` (writing nothing) when
        the KPI was evaluated since that state was read.
        """
        with self._write("save state") as connection:
            locked_verdicts(connection, [(state.kpi_id, based_on, None)])
            sql.upsert(connection, state_t, rows.state_row(state))
            self._insert_events(connection, events, deliveries or {})

    def delete_state(
        self,
        kpi_id: str,
        events: Sequence[Event] = (),
        deliveries: Mapping[str, Sequence[Delivery]] | None = None,
    ) -> None:
        """Forget a KPI's state (removed from the rules); its history stays. ``events``
        (what its removal means, e.g. its alert resolved) are stored in the same
        transaction, so a removal is told exactly when it is made."""
        with self._write("delete state") as connection:
            connection.execute(sa.delete(state_t).where(state_t.c.kpi_id == kpi_id))
            self._insert_events(connection, events, deliveries or {})

    def status_changes(self, kpi_id: str, *, limit: int | None = None) -> list[StatusChange]:
        """A KPI's status transitions, oldest first; with ``limit``, the newest ones."""
        query = sa.select(changes_t).where(changes_t.c.kpi_id == kpi_id)
        order = [changes_t.c.at, changes_t.c.id]
        found = self._read_last(query, order, limit, "read status changes")
        return [rows.to_status_change(row) for row in found]

    def status_changes_since(self, since: datetime | None) -> list[StatusChange]:
        """Every KPI's status transitions after ``since`` (all of them with None), oldest
        first: the on-call digest's in one query, not one per KPI (10,000 at 10,000 KPIs,
        each reading the KPI's whole history)."""
        query = sa.select(changes_t).order_by(changes_t.c.at, changes_t.c.id)
        if since is not None:
            query = query.where(changes_t.c.at > since)
        with self._read("read status changes") as connection:
            return [rows.to_status_change(row) for row in connection.execute(query).mappings()]

    def events(
        self,
        *,
        kpi_id: str | None = None,
        since: datetime | None = None,
        kinds: Collection[EventKind] | None = None,
        limit: int | None = None,
    ) -> list[Event]:
        """Events, oldest first; with ``limit``, the newest ``limit`` that match."""
        query = sa.select(events_t)
        if kpi_id is not None:
            query = query.where(events_t.c.kpi_id == kpi_id)
        if since is not None:
            query = query.where(events_t.c.at >= since)
        if kinds is not None:
            query = query.where(events_t.c.kind.in_([kind.value for kind in kinds]))
        found = self._read_last(query, [events_t.c.at, events_t.c.id], limit, "read events")
        return [rows.to_event(row) for row in found]

    # -- source health -------------------------------------------------------

    def set_source_health(
        self,
        source: str,
        *,
        up: bool,
        now: datetime,
        error: str | None,
        events: Sequence[Event] = (),
        deliveries: Mapping[str, Sequence[Delivery]] | None = None,
    ) -> None:
        """Record a source check; ``since`` moves only when up/down flips.

        ``events`` (an incident opening or closing) are stored only with a flip of the
        stored state: a second replica that saw the same outage adds nothing.
        """
        with self._write("save source health") as connection:
            previous = connection.execute(
                sa.select(health_t.c.up, health_t.c.since).where(health_t.c.source == source)
            ).first()
            flipped = previous.up != up if previous is not None else not up
            if not flipped:
                events = ()
            since = previous.since if previous is not None and previous.up == up else now
            row = {
                "source": source,
                "up": up,
                "since": since,
                "last_error": None if error is None else redact(error),
                "last_checked": now,
            }
            sql.upsert(connection, health_t, row)
            self._insert_events(connection, events, deliveries or {})

    def source_health(self) -> dict[str, tuple[bool, datetime, str | None]]:
        """source -> (up, since, last error)."""
        query = sa.select(health_t.c.source, health_t.c.up, health_t.c.since, health_t.c.last_error)
        with self._read("read source health") as connection:
            found = connection.execute(query).all()
        return {row.source: (bool(row.up), row.since, row.last_error) for row in found}

    # -- notifier bookkeeping --------------------------------------------------

    def slack_thread(
        self, kpi_id: str, channel: str, episode_since: datetime
    ) -> SlackThread | None:
        """The Slack message that opened this episode's thread in ``channel``."""
        query = sa.select(threads_t.c.ts, threads_t.c.parent).where(
            threads_t.c.kpi_id == kpi_id,
            threads_t.c.channel == channel,
            threads_t.c.episode_since == episode_since,
        )
        with self._read("read slack thread") as connection:
            row = connection.execute(query).first()
        return None if row is None else SlackThread(str(row.ts), row.parent)

    def save_slack_thread(
        self,
        kpi_id: str,
        channel: str,
        episode_since: datetime,
        ts: str,
        parent: Mapping[str, Any] | None = None,
    ) -> None:
        """Remember an episode's thread (idempotent; a new ``ts`` replaces the old one)."""
        row = {"kpi_id": kpi_id, "channel": channel, "episode_since": episode_since, "ts": ts,
               "parent": None if parent is None else dict(parent)}  # fmt: skip
        with self._write("save slack thread") as connection:
            sql.upsert(connection, threads_t, row)

    def digest_mark(self, kind: str) -> datetime | None:
        """When the digest ``kind`` was last sent."""
        query = sa.select(marks_t.c.sent_at).where(marks_t.c.kind == kind)
        with self._read("read digest mark") as connection:
            sent_at: datetime | None = connection.execute(query).scalar_one_or_none()
        return sent_at

    def set_digest_mark(self, kind: str, sent_at: datetime) -> None:
        """Record that the digest ``kind`` went out at ``sent_at``."""
        with self._write("save digest mark") as connection:
            sql.upsert(connection, marks_t, {"kind": kind, "sent_at": sent_at})

    # -- internals -----------------------------------------------------------

    @staticmethod
    def _restate(connection: Connection, observations: Sequence[Observation]) -> None:
        """Give stored points their new values (a restated period's row); the old value
        lives on in the ``restated`` event."""
        if observations:
            sql.upsert_many(connection, observations_t,
                            [rows.observation_row(o) for o in observations])  # fmt: skip

    @staticmethod
    def _insert_observations(connection: Connection, observations: Iterable[Observation]) -> int:
        # one row per key even within the batch: duplicates would only be ignored anyway
        unique = {(o.kpi_id, o.observed_at): rows.observation_row(o) for o in observations}
        return sql.insert_ignore_many(connection, observations_t, list(unique.values()))
