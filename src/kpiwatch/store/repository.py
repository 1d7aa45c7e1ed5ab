"""The state store: the only way the rest of kpiwatch reads or writes the database.

Every write that belongs together (an evaluation's state, history, events and
the notifications they cause) happens in one transaction, so a crash between
"decided" and "queued to tell people" cannot lose or half-write anything. The
outbox rows are what the dispatcher later delivers.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from types import TracebackType
from typing import Any

import sqlalchemy as sa
from alembic.util import CommandError
from sqlalchemy.engine import Connection, Engine

from kpiwatch.errors import StoreError, redact
from kpiwatch.model import (
    Delivery,
    DeliveryState,
    Evaluation,
    Event,
    EventKind,
    KpiState,
    Observation,
    OutboxMessage,
    Status,
    StatusChange,
)
from kpiwatch.store import migrate as migrations
from kpiwatch.store import rows, sql
from kpiwatch.store.engine import create_store_engine
from kpiwatch.store.schema import events as events_t
from kpiwatch.store.schema import kpi_state as state_t
from kpiwatch.store.schema import observations as observations_t
from kpiwatch.store.schema import outbox as outbox_t
from kpiwatch.store.schema import source_health as health_t
from kpiwatch.store.schema import status_changes as changes_t

# The outbox joined with its event; event columns are prefixed to avoid clashes.
_EVENT_PREFIX = "event_"
_MESSAGE_COLUMNS = [
    *outbox_t.c,
    *(c.label(_EVENT_PREFIX + c.name) for c in events_t.c if c.name != "id"),
]


class Store:
    """Observations, KPI state, history, events, the outbox and source health."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @classmethod
    def open(cls, url: str, *, migrate: bool = True) -> Store:
        """Connect to ``url`` and (by default) bring its schema up to date."""
        store = cls(create_store_engine(url))
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

    @property
    def engine(self) -> Engine:
        return self._engine

    def migrate(self) -> None:
        """Apply every pending migration (idempotent)."""
        try:
            migrations.upgrade(self._engine)
        except CommandError as exc:  # e.g. the database was migrated by a newer kpiwatch
            raise StoreError(f"cannot migrate {self.url}: {redact(str(exc))}") from exc
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"cannot migrate {self.url}: {_first_line(exc)}") from exc

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

    # -- state ---------------------------------------------------------------

    def get_state(self, kpi_id: str) -> KpiState | None:
        query = sa.select(state_t).where(state_t.c.kpi_id == kpi_id)
        with self._read("read state") as connection:
            row = connection.execute(query).mappings().first()
        return None if row is None else rows.to_state(row)

    def states(self) -> dict[str, KpiState]:
        """Every KPI's state, in one query."""
        with self._read("read states") as connection:
            found = connection.execute(sa.select(state_t)).mappings().all()
        return {row["kpi_id"]: rows.to_state(row) for row in found}

    def save_evaluation(
        self,
        evaluation: Evaluation,
        deliveries: Mapping[str, Sequence[Delivery]] | None = None,
        *,
        observations: Iterable[Observation] = (),
    ) -> None:
        """Record one evaluation atomically.

        Writes the observations (ignoring known points), the KPI's new state, a
        status change row when the effective status differs from the stored one
        (or there was none), the events (ignoring known keys) and, for each new
        event, the outbox rows ``deliveries[event.key]``. All or nothing.
        """
        state = evaluation.state
        with self._write("save evaluation") as connection:
            self._insert_observations(connection, observations)
            previous = connection.execute(
                sa.select(state_t.c.status).where(state_t.c.kpi_id == state.kpi_id)
            ).scalar_one_or_none()
            before = None if previous is None else Status(previous)
            sql.upsert(connection, state_t, rows.state_row(state))
            if before != state.status:
                connection.execute(
                    sa.insert(changes_t), rows.status_change_row(state, evaluation.at, before)
                )
            self._insert_events(connection, evaluation.events, deliveries or {})

    def save_state(
        self,
        state: KpiState,
        events: Sequence[Event] = (),
        deliveries: Mapping[str, Sequence[Delivery]] | None = None,
    ) -> None:
        """Store a state with its events and outbox rows (review ticks); no history row."""
        with self._write("save state") as connection:
            sql.upsert(connection, state_t, rows.state_row(state))
            self._insert_events(connection, events, deliveries or {})

    def delete_state(self, kpi_id: str) -> None:
        """Forget a KPI's state (removed from the rules); its history stays."""
        with self._write("delete state") as connection:
            connection.execute(sa.delete(state_t).where(state_t.c.kpi_id == kpi_id))

    def status_changes(self, kpi_id: str, *, limit: int | None = None) -> list[StatusChange]:
        """A KPI's status transitions, oldest first; with ``limit``, the newest ones."""
        query = sa.select(changes_t).where(changes_t.c.kpi_id == kpi_id)
        order = [changes_t.c.at, changes_t.c.id]
        found = self._read_last(query, order, limit, "read status changes")
        return [rows.to_status_change(row) for row in found]

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

    # -- outbox --------------------------------------------------------------

    def due_messages(self, now: datetime, *, limit: int = 100) -> list[OutboxMessage]:
        """Pending messages whose next attempt is due, oldest first, with their event."""
        query = (
            sa.select(*_MESSAGE_COLUMNS)
            .join_from(outbox_t, events_t, outbox_t.c.event_id == events_t.c.id)
            .where(outbox_t.c.state == DeliveryState.PENDING.value)
            .where(outbox_t.c.next_attempt_at <= now)
            .order_by(outbox_t.c.next_attempt_at, outbox_t.c.id)
            .limit(limit)
        )
        with self._read("read due messages") as connection:
            return [_message(row) for row in connection.execute(query).mappings()]

    def mark_sent(self, message_id: int, now: datetime) -> None:
        """A delivery succeeded (counts as an attempt)."""
        self._update_message(
            message_id,
            state=DeliveryState.SENT.value,
            sent_at=now,
            attempts=outbox_t.c.attempts + 1,
        )

    def mark_retry(
        self, message_id: int, now: datetime, *, error: str, next_attempt_at: datetime
    ) -> None:
        """A delivery failed and will be tried again at ``next_attempt_at``."""
        del now  # part of the contract for symmetry; the retry time is what matters
        self._update_message(
            message_id,
            last_error=redact(error),
            next_attempt_at=next_attempt_at,
            attempts=outbox_t.c.attempts + 1,
        )

    def mark_dead(self, message_id: int, now: datetime, *, error: str) -> None:
        """A delivery failed for good (retry budget spent or not retryable)."""
        del now
        self._update_message(
            message_id,
            state=DeliveryState.DEAD.value,
            last_error=redact(error),
            attempts=outbox_t.c.attempts + 1,
        )

    def messages(
        self, *, states: Collection[DeliveryState] | None = None, limit: int = 100
    ) -> list[OutboxMessage]:
        """Outbox messages, newest first, optionally only in ``states``."""
        query = sa.select(*_MESSAGE_COLUMNS).join_from(
            outbox_t, events_t, outbox_t.c.event_id == events_t.c.id
        )
        if states is not None:
            query = query.where(outbox_t.c.state.in_([state.value for state in states]))
        query = query.order_by(outbox_t.c.created_at.desc(), outbox_t.c.id.desc()).limit(limit)
        with self._read("read messages") as connection:
            return [_message(row) for row in connection.execute(query).mappings()]

    def pending_counts(self) -> dict[str, int]:
        """How many messages wait per channel (channels with none are absent)."""
        query = (
            sa.select(outbox_t.c.channel, sa.func.count())
            .where(outbox_t.c.state == DeliveryState.PENDING.value)
            .group_by(outbox_t.c.channel)
        )
        with self._read("count pending messages") as connection:
            return {channel: int(count) for channel, count in connection.execute(query)}

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
        """Record a source check; ``since`` moves only when up/down flips."""
        with self._write("save source health") as connection:
            previous = connection.execute(
                sa.select(health_t.c.up, health_t.c.since).where(health_t.c.source == source)
            ).first()
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

    # -- internals -----------------------------------------------------------

    @contextmanager
    def _write(self, action: str) -> Iterator[Connection]:
        """One transaction; SQLAlchemy errors become StoreError after the rollback."""
        try:
            with self._engine.begin() as connection:
                yield connection
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"{action}: {_first_line(exc)}") from exc

    @contextmanager
    def _read(self, action: str) -> Iterator[Connection]:
        try:
            with self._engine.connect() as connection:
                yield connection
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"{action}: {_first_line(exc)}") from exc

    def _read_last(
        self,
        query: sa.Select[Any],
        order: Sequence[sa.ColumnElement[Any]],
        limit: int | None,
        action: str,
    ) -> list[sa.RowMapping]:
        # "the last N, ascending": fetch newest-first with LIMIT, then reverse
        if limit is None:
            query = query.order_by(*order)
        else:
            query = query.order_by(*(column.desc() for column in order)).limit(limit)
        with self._read(action) as connection:
            found = list(connection.execute(query).mappings())
        return found if limit is None else found[::-1]

    @staticmethod
    def _insert_observations(connection: Connection, observations: Iterable[Observation]) -> int:
        # one row per key even within the batch: duplicates would only be ignored anyway
        unique = {(o.kpi_id, o.observed_at): rows.observation_row(o) for o in observations}
        return sql.insert_ignore_many(connection, observations_t, list(unique.values()))

    def _insert_events(
        self,
        connection: Connection,
        events: Iterable[Event],
        deliveries: Mapping[str, Sequence[Delivery]],
    ) -> None:
        outbox_rows: list[dict[str, Any]] = []
        for event in events:
            event_id = sql.insert_ignore_returning_id(
                connection, events_t, rows.event_row(event), unique="key"
            )
            if event_id is None:  # already recorded, and so were its deliveries
                continue
            # dict.fromkeys: keep order, drop a delivery listed twice
            for delivery in dict.fromkeys(deliveries.get(event.key, ())):
                outbox_rows.append(
                    {
                        "event_id": event_id,
                        "channel": delivery.channel,
                        "target": delivery.target,
                        "state": DeliveryState.PENDING.value,
                        "attempts": 0,
                        "next_attempt_at": event.at,
                        "created_at": event.at,  # the store has no clock; the event's time is close
                    }
                )
        self._insert_outbox(connection, outbox_rows)

    @staticmethod
    def _insert_outbox(connection: Connection, outbox_rows: Sequence[Mapping[str, Any]]) -> None:
        if outbox_rows:
            connection.execute(sa.insert(outbox_t), list(outbox_rows))

    def _update_message(self, message_id: int, **values: Any) -> None:
        with self._write("update outbox message") as connection:
            result = connection.execute(
                sa.update(outbox_t).where(outbox_t.c.id == message_id).values(**values)
            )
            if result.rowcount == 0:
                raise StoreError(f"no outbox message with id {message_id}")


def _message(row: sa.RowMapping) -> OutboxMessage:
    names = ("key", "kind", "kpi_id", "source", "at", "data")
    event = rows.to_event({name: row[_EVENT_PREFIX + name] for name in names})
    return rows.to_message(row, event)


def _first_line(exc: BaseException) -> str:
    # SQLAlchemy appends the SQL and its parameters; the cause keeps them for debugging
    text = str(exc).strip().splitlines()
    return redact(text[0] if text else type(exc).__name__)
